"""`edge-saliency` command line: export, run, and the tools built on them.

Every user error ends as one line on stderr and a non-zero exit; set EDGE_SALIENCY_DEBUG=1 to
see the traceback of an unexpected failure.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edge_saliency import methods
from edge_saliency.errors import UserError

PROG = "edge-saliency"


def _floats(text: str, n: int | None = None, what: str = "value") -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} wants comma-separated numbers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise UserError(f"{what} wants {n} comma-separated numbers, got {text!r}")
    return vals


def channel_values(text: str | None, what: str, positive: bool = False) -> tuple[float, float, float] | None:
    """'127' or '123.7,116.3,103.5' -> three per-channel values (one value is used for all three)."""
    if not text:
        return None
    vals = _floats(text, None, what)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise UserError(f"{what} wants 1 or 3 comma-separated numbers, got {text!r}")
    if positive and min(vals) <= 0:
        raise UserError(f"{what} values must be positive")
    return vals[0], vals[1], vals[2]


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise UserError(f"--input-size wants N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16:
        raise UserError(f"--input-size wants N or HxW with sides of at least 16, got {text!r}")
    return parts[0], parts[1]


# ---------------------------------------------------------------- the default model
def _built_by(path: Path) -> str | None:
    """The edge-saliency version that wrote ``path`` (from its metadata), or None."""
    import json

    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        props = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        return json.loads(props.get("edge_saliency.export", "{}")).get("edge_saliency")
    except Exception:
        return None


def ensure_default_model(log_fn=print) -> Path:
    """The default pretrained model: exported on first use where torch is installed, and again
    when the cached file was written by another release (whose maps may differ)."""
    import edge_saliency
    from edge_saliency.model import default_model_path

    path = default_model_path()
    if path.is_file():
        built = _built_by(path)
        if built == edge_saliency.__version__:
            return path
        try:
            import export.build  # noqa: F401
        except ImportError:
            log_fn(f"note: {path} was written by edge-saliency {built or 'unknown'}, this is "
                   f"{edge_saliency.__version__}; no torch here to export it again, using it as it is")
            return path
        log_fn(f"note: {path} was written by edge-saliency {built or 'unknown'}; exporting it again")
    try:
        from export.build import ExportOptions, export_from_options
    except ImportError as exc:
        raise UserError(
            f"no default model at {path} and no torch here to export it: run `edge-saliency export "
            f"--out {path}` on a machine with pip install 'edge-saliency[export]', copy it here, "
            "or pass --model"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    log_fn(f"first run: exporting the default model to {path}")
    export_from_options(ExportOptions(out=str(path)), log=log_fn)
    return path


# ---------------------------------------------------------------- export
def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="add in-graph saliency maps to a CNN and write one checked ONNX file",
                       description="Export a CNN (from torch, or an existing ONNX classifier with --onnx) to one "
                                   "ONNX file whose forward pass also yields SMOE Scale maps (per scale and "
                                   "combined), Recipro-CAM and, on request, gradient CAMs.")
    p.add_argument("--arch", default="efficientnet_lite0", help="built-in architecture (default: %(default)s, pretrained ImageNet)")
    p.add_argument("--module", help="any torch CNN: 'package.module:callable' returning an nn.Module")
    p.add_argument("--weights", help="state dict (.pth) to load into the model")
    p.add_argument("--random-weights", action="store_true", help="built-in arch without its pretrained weights")
    p.add_argument("--out", help="output file (default: <arch>.onnx, or <name>_saliency.onnx with --onnx)")
    p.add_argument("--input-size", type=str, help="N or HxW (default: the arch's, 224 for --module; with --onnx "
                                                  "only for a model with a dynamic spatial size)")
    p.add_argument("--methods", default=",".join(methods.DEFAULT),
                   help=f"comma list of {', '.join(methods.NAMES)} | all | none (default: %(default)s)")
    p.add_argument("--labels", help="class names, one per line (default: ImageNet for 1000 classes)")
    p.add_argument("--mean", help="mean on 0-255 in the model's colour order: one value or three, e.g. 127 or 123.7,116.3,103.5")
    p.add_argument("--std", help="std on 0-255: one value or three, e.g. 128 or 58.4,57.1,57.4")
    p.add_argument("--scale-layers", "--scale-nodes", dest="scale_layers",
                   help="override the discovered scale ends, early to late: torch module names, ONNX node or tensor names")
    p.add_argument("--feature-layer", "--target-node", dest="feature_layer",
                   help="override the last feature map (what Recipro-CAM masks): module, node or tensor name")
    p.add_argument("--smoe-weights", help="weights of the scale maps in the combined SMOE map (default: all 1)")
    p.add_argument("--normaliser", default="gaussian", help="gaussian | gamma CDF (default: %(default)s)")
    p.add_argument("--smoe-eps", type=float, default=1e-3,
                   help="epsilon in SMOE's log2(a + eps) (default: %(default)s; the paper's 1e-7 turns float noise "
                        "at near-zero activations into map noise)")
    p.add_argument("--recipro-score", default="logit", help="logit | softmax score of the target class per position (default: %(default)s)")
    p.add_argument("--recipro-variant", default="onehot", help="onehot | gaussian3x3 spatial mask (default: %(default)s)")
    p.add_argument("--map-fraction", type=int, default=4, help="SMOE maps at input size / N (default: %(default)s)")
    p.add_argument("--class-input", action="store_true", help="add a class_index input to explain a chosen class")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="write the model in this precision after the fp32 checks: fp16 for GPUs, int8 static "
                        "QDQ for CPUs; saliency heads stay float32 (default: %(default)s)")
    p.add_argument("--calibration", help="folder of images for int8 calibration (default: the scikit-image photographs)")
    g = p.add_argument_group("existing ONNX classifier (no torch needed)")
    g.add_argument("--onnx", help="add the saliency outputs to this ONNX classifier instead of exporting from torch")
    g.add_argument("--color", help="rgb | bgr: the channel order the ONNX model expects (default: rgb)")
    g.add_argument("--layout", help="nchw | nhwc: the ONNX model's input layout (default: from its shape)")
    p.set_defaults(func=cmd_export)


def _spec_fields(args) -> dict:
    """The options both export paths share (edge_saliency.graph.builder.BuildSpec)."""
    return dict(
        methods=methods.parse(args.methods), labels=args.labels,
        mean=channel_values(args.mean, "--mean"), std=channel_values(args.std, "--std", positive=True),
        input_size=_size(args.input_size) if args.input_size else None,
        scale_nodes=[s.strip() for s in args.scale_layers.split(",") if s.strip()] if args.scale_layers else None,
        target_node=args.feature_layer,
        smoe_weights=_floats(args.smoe_weights, None, "--smoe-weights") if args.smoe_weights else None,
        normaliser=args.normaliser, smoe_eps=args.smoe_eps, recipro_score=args.recipro_score,
        recipro_variant=args.recipro_variant, map_fraction=args.map_fraction, class_input=args.class_input,
        precision=args.precision, calibration=args.calibration,
    )


def cmd_export(args) -> int:
    fields = _spec_fields(args)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if args.onnx:  # numpy + onnx only: the graph builder never imports torch
        from edge_saliency.graph.builder import SurgeryOptions, surgery

        torch_only = [flag for flag, given in (("--module", args.module), ("--weights", args.weights),
                                               ("--random-weights", args.random_weights)) if given]
        if torch_only:
            raise UserError(f"{torch_only[0]} does not apply to --onnx (it is for a torch model)")
        report = surgery(SurgeryOptions(onnx=args.onnx, out=args.out, color=(args.color or "rgb").lower(),
                                        layout=args.layout.lower() if args.layout else None, **fields), log=log)
        extra = f"; original outputs bit-for-bit equal: {', '.join(report['checks']['bit_exact_outputs'])}"
    else:
        if args.color or args.layout:
            raise UserError(f"{'--color' if args.color else '--layout'} is for --onnx (a torch export is NCHW RGB)")
        try:
            from export.build import ExportOptions, export_from_options
        except ImportError as exc:
            raise UserError(f"export needs torch and onnx ({exc.name} is missing): pip install 'edge-saliency[export]'") from exc
        report = export_from_options(ExportOptions(arch=args.arch, module=args.module, weights=args.weights,
                                                   pretrained=not args.random_weights, out=args.out, **fields), log=log)
        extra = f"; logits vs torch {report['logits_vs_torch']:.1e} (relative)"
    worst = ", ".join(f"{k} {v:.1e}" for k, v in report["checks"]["max_abs_diff_vs_reference"].items())
    print(f"wrote {report['path']} ({report['size_mb']:.1f} MB, outputs: {', '.join(report['outputs'])}) in "
          f"{report['seconds']:.1f}s; maps vs numpy reference max |diff|: {worst or 'no maps'}{extra}")
    return 0


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Real-time CNN saliency maps on small devices.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('edge_saliency').__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_export_parser(sub)
    for mod_name in ("edge_saliency.live", "edge_saliency.serve", "edge_saliency.bench", "edge_saliency.explain"):
        try:
            mod = __import__(mod_name, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        add = getattr(mod, "add_parser", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not the user's fault: still one line unless debugging
        if os.environ.get("EDGE_SALIENCY_DEBUG"):
            raise
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (EDGE_SALIENCY_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
