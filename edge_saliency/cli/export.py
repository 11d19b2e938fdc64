"""`edge-saliency export`: parse -> one BuildSpec -> the graph builder (``--onnx``, no torch) or the
torch front end (export/), which hands the same spec to the same builder."""
from __future__ import annotations

from edge_saliency import contract, methods
from edge_saliency.cli.args import _floats, _size, channel_values
from edge_saliency.errors import UserError


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
    p.add_argument("--precision", default="fp32", choices=contract.PRECISIONS,
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
