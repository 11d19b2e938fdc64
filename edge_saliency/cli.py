"""`edge-saliency` command line: export, run, and the tools built on them.

Every user error ends as one line on stderr and a non-zero exit; set EDGE_SALIENCY_DEBUG=1 to
see the traceback of an unexpected failure.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

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


# ---------------------------------------------------------------- export
def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a CNN to an ONNX file with in-graph saliency maps (needs torch)",
                       description="Export a CNN to one ONNX file whose forward pass also yields "
                                   "SMOE Scale maps (per scale and combined) and Recipro-CAM.")
    p.add_argument("--arch", default="efficientnet_lite0", help="built-in architecture (default: %(default)s, pretrained ImageNet)")
    p.add_argument("--module", help="any torch CNN: 'package.module:callable' returning an nn.Module")
    p.add_argument("--weights", help="state dict (.pth) to load into the model")
    p.add_argument("--random-weights", action="store_true", help="built-in arch without its pretrained weights")
    p.add_argument("--out", help="output file (default: <arch>.onnx)")
    p.add_argument("--input-size", type=str, help="N or HxW (default: the arch's, 224 for --module)")
    p.add_argument("--methods", default="smoe,recipro", help="comma list of smoe, recipro, guided, gradcam, gradcampp | all | none (default: %(default)s)")
    p.add_argument("--labels", help="class names, one per line (default: ImageNet for 1000 classes)")
    p.add_argument("--mean", help="RGB mean on 0-255: one value or three, e.g. 127 or 123.7,116.3,103.5")
    p.add_argument("--std", help="RGB std on 0-255: one value or three, e.g. 128 or 58.4,57.1,57.4")
    p.add_argument("--scale-layers", help="override discovered scale ends: layer names, early to late")
    p.add_argument("--feature-layer", help="override the last feature map that Recipro-CAM masks")
    p.add_argument("--smoe-weights", help="weights of the scale maps in the combined SMOE map (default: all 1)")
    p.add_argument("--normaliser", default="gaussian", help="gaussian | gamma CDF (default: %(default)s)")
    p.add_argument("--smoe-eps", type=float, default=1e-3,
                   help="epsilon in SMOE's log2(a + eps) (default: %(default)s; the paper's 1e-7 is ill-conditioned "
                        "at near-zero activations: maps then differ across runtimes by up to ~5e-3)")
    p.add_argument("--recipro-score", default="logit", help="logit | softmax score of the target class per position (default: %(default)s)")
    p.add_argument("--recipro-variant", default="onehot", help="onehot | gaussian3x3 spatial mask (default: %(default)s)")
    p.add_argument("--map-fraction", type=int, default=4, help="SMOE maps at input size / N (default: %(default)s)")
    p.add_argument("--class-input", action="store_true", help="add a class_index input to explain a chosen class")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="write the model in this precision after the fp32 checks: fp16 for GPUs, int8 static "
                        "QDQ for CPUs; saliency heads stay float32 (default: %(default)s)")
    p.add_argument("--calibration", help="folder of images for int8 calibration (default: the scikit-image photographs)")
    g = p.add_argument_group("existing ONNX classifier (graph surgery, no torch needed)")
    g.add_argument("--onnx", help="add the saliency outputs to this ONNX classifier instead of exporting from torch")
    g.add_argument("--color", default="rgb", help="rgb | bgr: the channel order the ONNX model expects (default: %(default)s)")
    g.add_argument("--layout", help="nchw | nhwc: the ONNX model's input layout (default: from its shape)")
    g.add_argument("--target-node", help="node or tensor: the last feature map, before the classifier head")
    g.add_argument("--scale-nodes", help="nodes or tensors to read as scale ends, early to late (default: discovered)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    if args.onnx:  # numpy + onnx only: export.onnx_surgery never imports torch
        from export.onnx_surgery import cmd_export_onnx

        return cmd_export_onnx(args)
    try:
        from export.build import ExportOptions, export_from_options, parse_methods
    except ImportError as exc:
        raise UserError(f"export needs torch and onnx ({exc.name} is missing): pip install 'edge-saliency[export]'") from exc
    mean = channel_values(args.mean, "--mean")
    std = channel_values(args.std, "--std", positive=True)
    opts = ExportOptions(
        arch=args.arch, module=args.module, weights=args.weights, pretrained=not args.random_weights,
        out=args.out, input_size=_size(args.input_size) if args.input_size else None,
        methods=parse_methods(args.methods), labels=args.labels,
        mean=mean, std=std,
        scale_layers=[s.strip() for s in args.scale_layers.split(",")] if args.scale_layers else None,
        feature_layer=args.feature_layer,
        smoe_weights=_floats(args.smoe_weights, None, "--smoe-weights") if args.smoe_weights else None,
        normaliser=args.normaliser, smoe_eps=args.smoe_eps, recipro_score=args.recipro_score,
        recipro_variant=args.recipro_variant, map_fraction=args.map_fraction, class_input=args.class_input,
        precision=args.precision, calibration=args.calibration,
    )
    if args.smoe_eps <= 0:
        raise UserError("--smoe-eps must be positive")
    report = export_from_options(opts, log=lambda m: print(m, flush=True))
    parity = report["parity"]["max_abs_diff"]
    worst = ", ".join(f"{k} {v:.1e}" for k, v in parity.items() if k != "target_class")
    print(f"wrote {report['path']} ({report['size_mb']:.1f} MB, outputs: {', '.join(report['outputs'])}) "
          f"in {report['seconds']:.1f}s; ORT vs torch max |diff|: {worst}")
    return 0


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Real-time CNN saliency maps on small devices.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('edge_saliency').__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_export_parser(sub)
    for mod_name, command in COMMAND_MODULES.items():
        try:
            mod = __import__(mod_name, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue
            _add_broken_command(sub, command, exc)
            continue
        except (ImportError, OSError) as exc:  # a native library is missing (libxcb, libGL, libgomp ...)
            _add_broken_command(sub, command, exc)
            continue
        add = getattr(mod, "add_parser", None)
        if add is not None:
            try:
                add(sub)
            except (ImportError, OSError) as exc:  # the command's options need a module that cannot load
                _add_broken_command(sub, command, exc)
    return parser


# the modules that add a command, and the command each adds
COMMAND_MODULES = {"edge_saliency.live": "run", "edge_saliency.serve": "serve", "edge_saliency.bench": "bench",
                   "edge_saliency.explain": "explain"}


def _add_broken_command(sub, command: str, exc: BaseException) -> None:
    """The command's module cannot be imported here: the command stays listed and, when used, says
    why in one line instead of a traceback."""
    from edge_saliency.sysdeps import import_error_line

    line = import_error_line(exc)
    p = sub.choices.get(command)  # add_parser may have got this far before the failing import
    if p is None:
        p = sub.add_parser(command, help=f"(unavailable here: {line.split(':')[0][:80]}; run it for more)", add_help=False)
    else:
        for action in sub._choices_actions:
            if action.dest == command:
                action.help = f"(unavailable here: {line.split(':')[0][:80]}; run it for more)"

    def fail(args, line=line):
        raise UserError(f"{command}: {line}")

    fail.takes_anything = True  # main() passes it every argument unparsed
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(getattr(args, "func", None), "takes_anything", False):
        parser.parse_args(argv)  # the usual usage error for unknown arguments
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
    except (ImportError, OSError) as exc:
        if isinstance(exc, OSError) and not _is_library_error(exc):
            return _unexpected(exc)
        from edge_saliency.sysdeps import import_error_line

        if os.environ.get("EDGE_SALIENCY_DEBUG"):
            raise
        print(f"{PROG}: error: {import_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not the user's fault: still one line unless debugging
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    if os.environ.get("EDGE_SALIENCY_DEBUG"):
        raise exc
    print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (EDGE_SALIENCY_DEBUG=1 shows the traceback)",
          file=sys.stderr)
    return 1


def _is_library_error(exc: OSError) -> bool:
    """An OSError from loading a shared library (ctypes, a DLL) rather than from a file the user named."""
    from edge_saliency.sysdeps import missing_library

    return exc.filename is None and missing_library(exc) is not None


if __name__ == "__main__":
    sys.exit(main())
