"""`explain` and `eval` over a few images in one process (explain/dataset.py runs many, resumably):
maps written as .npy + overlay PNG and summary.json; or methods x images -> the quality table,
a JSON report and a contact sheet. Images are files, folders of images, or ``sample:NAME``."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.quality import metrics
from edge_saliency.errors import UserError
from edge_saliency.explain import registry
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
def explain_images(args) -> int:
    """`edge-saliency explain IMAGES...`: every method's map of every image, under args.out."""
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


def eval_images(args) -> int:
    """`edge-saliency eval --images ...`: methods x images -> the table of quality metrics."""
    images = load_images(args.images)
    boxes = metrics.read_boxes(args.boxes) if args.boxes else None
    classifier, model = open_classifier(args)
    names = registry.parse_methods(args.methods, model)
    cls = class_index_of(classifier, model, args.class_name)
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
