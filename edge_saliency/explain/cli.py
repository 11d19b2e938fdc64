"""`edge-saliency explain` (maps for images) and `edge-saliency eval` (methods x images -> metrics).

    edge-saliency explain photo.jpg --method decam --out maps/
    edge-saliency explain frames/ --method maskopt,rise,recipro --class "Egyptian cat" --out maps/
    edge-saliency eval --images photos/ --methods smoe,recipro,fastcam,decam,maskopt,rise --json q.json

Images are files, folders of images, or ``sample:NAME`` for scikit-image's photographs
(``sample:chelsea``). The gradient CAMs ``guided``, ``gradcam`` and ``gradcampp`` work with a model
exported with them (``edge-saliency export --methods all``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.quality import metrics
from edge_saliency.errors import UserError
from edge_saliency.explain import methods as registry
from edge_saliency.explain.common import Scorer
from edge_saliency.explain.session import (COLUMNS, IMAGE_EXTS, class_index_of, format_table, json_default,  # noqa: F401
                                           method_settings, open_classifier, overlay, preprocess)



# ---------------------------------------------------------------- inputs
def load_images(specs: list[str]) -> list[tuple[str, np.ndarray]]:
    """Files, folders (their image files, sorted) and sample:NAME -> [(name, BGR uint8)]."""
    out = []
    for spec in specs:
        if spec.startswith("sample:"):
            from edge_saliency import samples

            name = spec.split(":", 1)[1]
            try:
                out.append((name, samples.photo(name)))
            except AttributeError:
                raise UserError(f"no sample photograph named {name!r} (try chelsea, coffee, astronaut)") from None
            continue
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
            if not files:
                raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {spec}")
        elif p.is_file():
            files = [p]
        else:
            raise UserError(f"image not found: {spec}")
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise UserError(f"cannot read image {f} (not an image, or a format OpenCV cannot decode)")
            out.append((f.stem, img))
    if not out:
        raise UserError("no images given")
    return out


def _write_png(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise UserError(f"cannot write {path}")


# ---------------------------------------------------------------- explain
def cmd_explain(args) -> int:
    if args.images:
        if args.inputs:
            raise UserError("give images either as arguments or with --images (a dataset run), not both")
        from edge_saliency.explain import dataset_driver

        return dataset_driver.cmd(args, "explain")
    if not args.inputs:
        raise UserError("explain needs images: files, folders or sample:NAME, or --images DIR|LIST.txt|FILE.parquet")
    _no_dataset_flags(args, "explain IMAGES... (give them with --images for a dataset run)")
    images = load_images(args.inputs)
    classifier, model = open_classifier(args)
    names = registry.parse_methods(args.method, model)
    cls = class_index_of(classifier, model, args.class_name)
    ctx = registry.Context(classifier, model, method_settings(args, names), progress=None if not args.quiet else False)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    summary, status = [], 0
    for stem, image in images:
        x = preprocess(classifier, model, image)
        ctx.others = [preprocess(classifier, model, o) for s, o in images if s != stem][:4]
        for method in names:
            r = registry.explain(ctx, method, x, cls)
            base = out / f"{stem}_{method}"
            np.save(base.with_suffix(".npy"), r.saliency)
            _write_png(base.with_suffix(".png"), overlay(image, r.saliency))
            entry = {"image": stem, "method": method, "class_index": r.class_index, "label": r.label,
                     "score": r.score, "queries": r.queries, "seconds": r.timings["explain"],
                     "interrupted": r.interrupted, "map": str(base.with_suffix(".npy")),
                     "overlay": str(base.with_suffix(".png")),
                     "info": {k: v for k, v in r.info.items() if not k.endswith("_history")}}
            summary.append(entry)
            extra = ""
            if "reconstruction" in r.info:
                extra = f", reconstruction accuracy {r.info['reconstruction']['accuracy']:.0%}"
            print(f"{stem} {method}: {r.label} ({r.score:.2f}), {r.queries} queries, "
                  f"{r.timings['explain']:.1f}s{extra} -> {base}.png")
            if r.interrupted:
                status = 130
                break
        if status:
            print("interrupted: kept the best map found so far", file=sys.stderr)
            break
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default))
    print(f"wrote {out / 'summary.json'}")
    return status


# ---------------------------------------------------------------- eval


def evaluate(ctx, names, images, cls_arg, boxes, steps, keep, log=print):
    """Methods x images -> (per-image rows, per-method means, first-image overlays for the sheet)."""
    probe = Scorer(ctx.classifier)
    rows, sheet_rows = [], []
    interrupted = False
    prepped = [(stem, img, preprocess(ctx.classifier, ctx.model, img)) for stem, img in images]
    for stem, image, x in prepped:
        others = [o for s, _, o in prepped if s != stem]
        ctx.others = others[:4]
        fills = metrics.reconstruction_fills(x, others[:4])
        sheet = [image]
        for method in names:
            try:
                r = registry.explain(ctx, method, x, cls_arg)
            except KeyboardInterrupt:
                interrupted = True
                break
            if r.interrupted:  # Ctrl-C in a black-box method: keep what is done, stop here
                interrupted = True
                break
            cls = r.class_index
            # map' on image * map: same method, same class (in-graph: the class input when there is one)
            recompute_cls = cls if (method in registry.BLACK_BOX or (ctx.model and ctx.model.has_class_input)) else None
            parts = metrics.adcc_parts(probe.all_probs, x, r.saliency, cls,
                                       lambda im: registry.explain(ctx, method, im, recompute_cls).saliency)
            curves = metrics.insertion_deletion(probe.all_probs, x, r.saliency, cls, steps=steps)
            recon = metrics.reconstruction_accuracy(probe.all_probs, x, r.saliency, fills, keep)
            row = {"image": stem, "method": method, "class_index": cls, "label": r.label, "score": r.score,
                   **{k: parts[k] for k in ("avg_drop", "coherency", "complexity", "adcc", "masked_score")},
                   "insertion": curves["insertion"], "deletion": curves["deletion"],
                   "reconstruction": recon["accuracy"], "reconstruction_unchanged": recon["unchanged"],
                   "ms": 1000 * r.timings["explain"], "queries": r.queries}
            if boxes is not None:
                b = boxes.get(stem)
                row["pointing"] = None if b is None else float(metrics.pointing_hit(r.saliency, b, image.shape[:2]))
            if "reconstruction" in r.info:
                row["own_reconstruction"] = r.info["reconstruction"]["accuracy"]
            rows.append(row)
            sheet.append(overlay(image, r.saliency))
            log(f"{stem} {method}: ADCC {row['adcc']:.3f} insertion {row['insertion']:.3f} "
                f"deletion {row['deletion']:.3f} ({row['ms']:.0f} ms, {row['queries']} queries)")
        sheet_rows.append(sheet)
        if interrupted:
            break
    summary = {}
    for method in names:
        if not any(r["method"] == method for r in rows):
            continue
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {}
        for key, _ in COLUMNS:
            vals = [r[key] for r in mine if r.get(key) is not None]
            summary[method][key] = float(np.mean(vals)) if vals else None
    return rows, summary, sheet_rows, interrupted


def contact_sheet(sheet_rows, names, height: int = 160) -> np.ndarray:
    tiles = []
    for row in sheet_rows:
        cells = []
        for i, img in enumerate(row):
            w = max(1, round(img.shape[1] * height / img.shape[0]))
            cell = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
            label = "image" if i == 0 else names[i - 1]
            cv2.putText(cell, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            cells.append(cell)
        tiles.append(np.concatenate(cells, axis=1))
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles]
    return np.concatenate(tiles, axis=0)


def cmd_eval(args) -> int:
    if not args.images:
        raise UserError("eval needs --images (files, folders or sample:NAME)")
    if args.out:
        from edge_saliency.explain import dataset_driver

        return dataset_driver.cmd(args, "eval")
    _no_dataset_flags(args, "eval without --out (add --out OUT/ for a dataset run)")
    images = load_images(args.images)
    boxes = metrics.read_boxes(args.boxes) if args.boxes else None
    classifier, model = open_classifier(args)
    names = registry.parse_methods(args.methods, model)
    cls = class_index_of(classifier, model, args.class_name)
    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    ctx = registry.Context(classifier, model, method_settings(args, names), progress=None if not args.quiet else False)
    t0 = time.perf_counter()
    rows, summary, sheet_rows, interrupted = evaluate(ctx, names, images, cls, boxes, args.steps, args.keep or 0.25,
                                         log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
    if not rows:
        print("interrupted before the first map", file=sys.stderr)
        return 130
    print(format_table(summary, boxes is not None))
    report = {"model": getattr(model, "path", getattr(classifier, "path", None)), "methods": names,
              "images": [s for s, _ in images], "insertion_steps": args.steps, "keep": args.keep or 0.25,
              "budget": args.budget, "seconds": time.perf_counter() - t0, "summary": summary, "per_image": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=json_default))
        print(f"wrote {args.json}")
    sheet = args.sheet or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if sheet:
        _write_png(Path(sheet), contact_sheet(sheet_rows, names))
        print(f"wrote {sheet}")
    if interrupted:
        print("interrupted: the table and files hold the maps finished so far", file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------- parsers
def _common(p) -> None:
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
    p.add_argument("--generations", type=int, help="decam: generations (default: as many as --budget allows, else 23)")
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
