"""`edge-saliency explain` (maps for images) and `edge-saliency eval` (methods x images -> metrics).

    edge-saliency explain photo.jpg --method decam --out maps/
    edge-saliency explain frames/ --method maskopt,rise,recipro --class "Egyptian cat" --out maps/
    edge-saliency eval --images photos/ --methods smoe,recipro,fastcam,decam,maskopt,rise --json q.json
    edge-saliency explain --images val/ --method recipro,decam --out run/ [--workers 2 | --ray [ADDRESS]]

Images are files, folders of images, or ``sample:NAME`` for scikit-image's photographs
(``sample:chelsea``). The gradient CAMs ``guided``, ``gradcam`` and ``gradcampp`` work with a model
exported with them (``edge-saliency export --methods all``). With --images (explain) or --out
(eval) it is a dataset run (explain/dataset_driver.py): Parquet results, resumable.
"""
from __future__ import annotations

from edge_saliency.errors import UserError


def cmd_explain(args) -> int:
    if args.images:
        if args.inputs:
            raise UserError("give images either as arguments or with --images (a dataset run), not both")
        from edge_saliency.explain import dataset_driver

        return dataset_driver.cmd(args, "explain")
    if not args.inputs:
        raise UserError("explain needs images: files, folders or sample:NAME, or --images DIR|LIST.txt|FILE.parquet")
    _no_dataset_flags(args, "explain IMAGES... (give them with --images for a dataset run)")
    from edge_saliency.explain.per_image import explain_images

    return explain_images(args)


def cmd_eval(args) -> int:
    if not args.images:
        raise UserError("eval needs --images (files, folders or sample:NAME)")
    if args.out:
        from edge_saliency.explain import dataset_driver

        return dataset_driver.cmd(args, "eval")
    _no_dataset_flags(args, "eval without --out (add --out OUT/ for a dataset run)")
    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    from edge_saliency.explain.per_image import eval_images

    return eval_images(args)


def _common(p) -> None:
    from edge_saliency.explain import decam  # add_parser imports the registry (and decam) already

    p.add_argument("--model", help="edge-saliency ONNX file, or any ONNX classifier (default: the pretrained EfficientNet-Lite0)")
    p.add_argument("--plain", action="store_true", help="treat --model as a plain classifier (float NCHW input, logits output)")
    p.add_argument("--mean", help="plain classifier: RGB mean on 0-255 (default ImageNet 123.675,116.28,103.53)")
    p.add_argument("--std", help="plain classifier: RGB std on 0-255 (default ImageNet 58.395,57.12,57.375)")
    p.add_argument("--bgr", action="store_true", help="plain classifier: the model wants BGR, not RGB")
    p.add_argument("--input-size", help="plain classifier with a dynamic input: N or HxW")
    p.add_argument("--labels", help="plain classifier: class names, one per line")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider (default: %(default)s)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads")
    p.add_argument("--class", dest="class_name", help="class to explain, by name or index (default: top-1)")
    p.add_argument("--budget", type=int, help="max forward passes per black-box map (default: each method's settings)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the black-box methods (default: %(default)s)")
    p.add_argument("--grid", type=int, help="coarse mask grid of decam/maskopt/rise (default 5, refined to 10 halfway, for decam/maskopt; rise 7)")
    p.add_argument("--population", type=int, help="decam: population size (default 24)")
    p.add_argument("--generations", type=int, help="decam: generations (default: as many as --budget allows, else 1200 queries)")
    p.add_argument("--de-strategy", choices=decam.STRATEGIES,
                   help="decam: DE mutation (default current-to-pbest/1; rand/1: classic DE)")
    p.add_argument("--no-prune", dest="prune", action="store_const", const=False,
                   help="decam: skip the final knock-out of cells that do not matter (saves 100-200 queries)")
    p.add_argument("--de-boxes", type=float,
                   help="decam: fraction of the first population that are random boxes, the rest noise (default 0.25; 0: all noise)")
    p.add_argument("--de-f", type=float, help="decam: differential weight F (default 0.5)")
    p.add_argument("--de-cr", type=float, help="decam: crossover rate CR (default 0.7)")
    p.add_argument("--sparsity", type=float, help="decam/maskopt: weight of the mask-size penalty (default 1.0)")
    p.add_argument("--fill", choices=["blur", "black"], help="decam/maskopt: what replaces masked-out pixels (default blur)")
    p.add_argument("--refine", type=int, help="decam/maskopt: finer grid for the second half of the search (default 10; <= --grid: none)")
    p.add_argument("--masks", type=int, help="rise: number of random masks (default 2000)")
    p.add_argument("--opt-steps", dest="opt_steps", type=int, help="maskopt: optimisation steps (default: as many as --budget allows, else 35)")
    p.add_argument("--pairs", type=int, help="maskopt: perturbation pairs per step (default 8)")
    p.add_argument("--keep", type=float, help="fraction of salient pixels kept for reconstruction (default 0.25)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-map lines")


def add_parser(sub) -> None:
    from edge_saliency.explain import registry

    p = sub.add_parser("explain", help="saliency maps of images by in-graph or black-box methods",
                       description="Explain images: PNG overlay + .npy map per image and method, and summary.json.")
    p.add_argument("inputs", nargs="*", help="image files, folders, or sample:NAME")
    p.add_argument("--images", nargs="+", help="a dataset run: folders, LIST.txt, FILE.parquet, files or sample:NAME "
                                               "-> Parquet results and maps under --out, resumable")
    p.add_argument("--method", default="decam", help="comma list of " + ", ".join(registry.KNOWN) + " (default: %(default)s)")
    p.add_argument("--out", default="maps", help="output folder (default: %(default)s)")
    _common(p)
    dataset_arguments(p, with_out=False)
    p.set_defaults(func=cmd_explain)

    e = sub.add_parser("eval", help="judge saliency methods: ADCC, insertion/deletion, pointing game, reconstruction",
                       description="Run methods x images and print a table of quality metrics (means over images).")
    e.add_argument("--images", nargs="+", help="image files, folders, or sample:NAME")
    e.add_argument("--methods", default="smoe,recipro,fastcam,decam,maskopt,rise", help="comma list (default: %(default)s)")
    e.add_argument("--json", help="write per-image and summary numbers here")
    e.add_argument("--sheet", help="contact sheet PNG (default: next to --json)")
    e.add_argument("--boxes", help="JSON {image stem: [[x0, y0, x1, y1], ...]} for the pointing game")
    e.add_argument("--steps", type=int, default=32, help="insertion/deletion steps (default: %(default)s)")
    _common(e)
    dataset_arguments(e, with_out=True)
    e.set_defaults(func=cmd_eval)


def _no_dataset_flags(args, where: str) -> None:
    used = [flag for flag, on in (("--workers", args.workers != 1), ("--ray", args.ray is not None),
                                  ("--chunk-size", args.chunk_size is not None), ("--num-cpus", args.num_cpus is not None),
                                  ("--num-gpus", args.num_gpus is not None), ("--ship-images", args.ship_images),
                                  ("--no-overlays", args.no_overlays)) if on]
    if used:
        raise UserError(f"{used[0]} is for dataset runs; {where}")


def dataset_arguments(p, with_out: bool) -> None:
    from edge_saliency.explain.dataset_driver import add_arguments

    add_arguments(p, with_out)
