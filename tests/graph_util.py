"""Test helpers for built models: run them, and compare their maps with the methods' numpy
references computed from the activations of the same run (exposed as extra outputs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edge_saliency import contract, methods
from edge_saliency.graph import builder


def session(path_or_model):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def run(path_or_model, batch: np.ndarray, class_index=None, extra: list[str] | None = None) -> dict:
    model = onnx.load(str(path_or_model)) if not isinstance(path_or_model, onnx.ModelProto) else path_or_model
    if extra:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        have = {o.name for o in m.graph.output}
        m.graph.output.extend([onnx.ValueInfoProto(name=t) for t in extra if t not in have])
        model = m
    sess = session(model)
    feeds = {contract.INPUT: batch}
    if any(i.name == contract.CLASS_INPUT for i in sess.get_inputs()):
        feeds[contract.CLASS_INPUT] = np.asarray(class_index if class_index is not None else [-1] * len(batch),
                                                 dtype=np.int64)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def surgery(plain: Path, out: Path, **spec) -> dict:
    return builder.surgery(builder.SurgeryOptions(onnx=str(plain), out=str(out), **spec), log=lambda m: None)


def reference_diffs(built: Path, original: onnx.ModelProto, spec: builder.BuildSpec, images: np.ndarray,
                    head_fn=None, class_index=None) -> dict[str, float]:
    """max |map - numpy reference| per output of every method in ``spec``; ``head_fn`` (masked copies
    -> logits) replaces the reference head for Recipro-CAM (e.g. the torch module's own head)."""
    _, ctx, _ = builder.build(original, spec, "test", log=lambda m: None)
    an = ctx.analysis
    tensors = [e.tensor for e in an.scale_ends] + ([an.head.feature.tensor] if an.head.kind != "none" else [])
    got = run(built, images, class_index, extra=tensors)
    ref_ctx = builder.BuildContext(None, spec, an, ctx.prepared.graph, contract.TARGET, ctx.map_size, ctx.batch,
                                   ctx.smoe_weights)
    if "recipro" in spec.methods:
        ref_ctx.head_fn = head_fn or builder._head_function(ctx.prepared, ref_ctx)
    diffs = {}
    for m in methods.TABLE:
        if m.name not in spec.methods:
            continue
        ref_ctx.method = m
        for name, ref in m.impl().reference(ref_ctx, got).items():
            assert got[name].shape == ref.shape, name
            assert got[name].std() > 1e-3, f"{name} is flat: comparing it would prove nothing"
            diffs[name] = float(np.abs(got[name].astype(np.float64) - ref).max())
    return diffs
