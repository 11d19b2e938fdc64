"""The registry of methods that `explain` and `eval` know, and how each one makes a map.

- In-graph methods come from the model's own outputs (one forward pass): ``smoe``, ``recipro``,
  ``fastcam`` (SMOE x Recipro-CAM), and the gradient CAMs ``guided``, ``gradcam``, ``gradcampp``
  when the model was exported with them (``contract.METHOD_MAP`` names each one's output).
- Black-box methods (``decam``, ``maskopt``, ``rise``) run on any classifier through queries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge_saliency import contract
from edge_saliency.errors import UserError
from edge_saliency.explain import decam, maskopt, rise
from edge_saliency.explain.common import Classifier, Explanation, make_explanation, softmax, Scorer

IN_GRAPH = ("smoe", "recipro", "fastcam")
BLACK_BOX = {"decam": decam, "maskopt": maskopt, "rise": rise}
SETTINGS = {"decam": decam.DECAMSettings, "maskopt": maskopt.MaskOptSettings, "rise": rise.RISESettings}
EXPORTED_ONLY = tuple(m for m in contract.METHOD_MAP if m not in IN_GRAPH)  # guided, gradcam, gradcampp
KNOWN = IN_GRAPH + EXPORTED_ONLY + tuple(BLACK_BOX)


def parse_methods(text: str, model=None) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        raise UserError("no method given; choose from " + ", ".join(KNOWN))
    for name in names:
        if name in BLACK_BOX or name in IN_GRAPH:
            continue
        outputs = model.outputs if model is not None else ()
        if name in EXPORTED_ONLY:
            if contract.METHOD_MAP[name] in outputs:
                continue
            raise UserError(f"method {name!r} needs a model exported with it (edge-saliency export --methods "
                            f"smoe,recipro,{name}); its output {contract.METHOD_MAP[name]} is missing")
        raise UserError(f"unknown method {name!r}; choose from " + ", ".join(KNOWN))
    return names


@dataclass
class Context:
    """What a method needs: the classifier, the edge-saliency model (None for a plain ONNX
    classifier), per-method settings, and other images for the reconstruction check."""

    classifier: Classifier
    model: object | None = None
    settings: dict = field(default_factory=dict)  # method -> settings dataclass
    progress: bool | None = None
    others: list = field(default_factory=list)


def in_graph_map(model, image: np.ndarray, method: str, class_index: int | None) -> tuple[np.ndarray, int, np.ndarray]:
    """(map, target class, logits) of one in-graph method for one preprocessed image."""
    if model is None:
        raise UserError(f"method {method!r} comes from an edge-saliency model's outputs; "
                        "a plain ONNX classifier supports only decam, maskopt, rise")
    out = model.run(image[None], class_index)
    target = int(out[contract.TARGET][0])
    if method in ("smoe", "recipro", "fastcam"):
        needed = {"smoe": [contract.SMOE], "recipro": [contract.RECIPRO], "fastcam": [contract.SMOE, contract.RECIPRO]}[method]
        missing = [n for n in needed if n not in out]
        if missing:
            raise UserError(f"method {method!r} needs the model output {missing[0]!r}, which {model.path} lacks")
        smoe = out[contract.SMOE][0, 0] if contract.SMOE in out else None
        rc = out[contract.RECIPRO][0, 0] if contract.RECIPRO in out else None
        from edge_saliency.runtime.model import Result

        sal = Result(class_index=target, label="", score=0.0, topk=[], logits=out[contract.LOGITS][0],
                     smoe=smoe, recipro_cam=rc).map(method)
    else:
        name = contract.METHOD_MAP.get(method)
        if name not in out:
            raise UserError(f"method {method!r} is not among {model.path}'s outputs")
        sal = out[name][0, 0]
    return np.asarray(sal, dtype=np.float32), target, out[contract.LOGITS][0]


def explain(ctx: Context, method: str, image: np.ndarray, class_index: int | None = None) -> Explanation:
    """One map of ``method`` for a preprocessed image, as an Explanation."""
    if method in BLACK_BOX:
        mod = BLACK_BOX[method]
        kwargs = {"others": ctx.others} if method == "maskopt" else {}
        return mod.explain(ctx.classifier, image, class_index, ctx.settings.get(method), progress=ctx.progress, **kwargs)
    t0 = time.perf_counter()
    sal, target, logits = in_graph_map(ctx.model, image, method, class_index)
    cls = target if class_index is None else class_index
    scorer = Scorer(ctx.classifier)
    scorer.queries = 1
    return make_explanation(ctx.classifier, method, sal, cls, softmax(logits), scorer, time.perf_counter() - t0,
                            False, {"in_graph": True})
