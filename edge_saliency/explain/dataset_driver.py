"""The driver of a dataset run: plans the chunks that are not done yet, runs them in this process,
a process pool or on Ray (dataset_ray), writes each finished part, merges them; and the command
(``explain``/``eval`` with ``--images ... --out``). The pieces it drives are in dataset.py."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.quality import metrics
from edge_saliency.explain.dataset import (RESULTS, DatasetProgress, Item, Job, ParquetImages, Store, default_chunk_size,
                                           file_sha256, list_images, plan, read_image, require_pyarrow, run_local)


def run(job: Job, items: list[Item], out: Path, workers: int = 1, chunk_size: int | None = None,
        ray_address: str | None = None, use_ray: bool = False, num_cpus: float | None = None,
        num_gpus: float | None = None, ship_images: bool = False, progress: bool = True,
        log=lambda m: print(m, file=sys.stderr), opened: tuple | None = None) -> dict:
    """Plan, run the pending chunks (local or Ray), merge. Returns a summary dict; raises
    KeyboardInterrupt after writing what is finished when interrupted."""
    if workers < 1:
        raise UserError("--workers must be at least 1")
    chunk_size = chunk_size or default_chunk_size(job.methods)
    if chunk_size < 1:
        raise UserError("--chunk-size must be at least 1")
    if job.threads is None and (use_ray or workers > 1):  # one ONNX Runtime thread pool per core, not per worker
        from dataclasses import replace

        job = replace(job, threads=max(1, int(num_cpus or 1)) if use_ray else max(1, (os.cpu_count() or 1) // workers))
    store = Store(out, job)
    store.names = {it.id: it.name for it in items}
    p = plan(items, job.methods, store.done(), chunk_size)
    engine = "ray" if use_ray else ("pool" if workers > 1 else "in-process")
    if p.skipped:
        log(f"resuming: {p.skipped} (image, method) results already in {store.parts}, "
            f"{p.todo_images} of {len(items)} images to do")
    bar = DatasetProgress(p.todo_images, f"{job.mode} ({engine}, {workers} worker{'s' * (workers > 1)})",
                          enabled=progress)
    written = {"parts": 0, "rows": 0, "errors": 0}

    parquet = ParquetImages()

    def blobs_of(tasks):
        need = [it for it, _ in tasks if it.parquet is not None or (ship_images and it.path is not None)]
        blobs = parquet.blobs(need)
        if ship_images:
            for it in need:
                if it.path is not None:
                    try:
                        blobs[it.id] = Path(it.path).read_bytes()
                    except OSError:
                        pass  # the worker reports it as unreadable
        return blobs

    def on_chunk(k, rows):
        store.write_chunk(rows)
        errors = {r["image"] for r in rows if r.get("status") == "error"}
        written["parts"] += 1
        written["rows"] += len(rows)
        written["errors"] += len(errors)
        bar.update(len(p.chunks[k]), len(errors))

    t0 = time.perf_counter()
    import signal

    def _term(signum, frame):  # `kill` (SIGTERM) stops like Ctrl-C: the pool is stopped, the parts merged
        raise KeyboardInterrupt

    try:
        old_term = signal.signal(signal.SIGTERM, _term)
    except ValueError:  # not the main thread
        old_term = None
    try:
        if p.chunks:
            if use_ray:
                from edge_saliency.explain import dataset_ray

                dataset_ray.run_ray(job, p.chunks, on_chunk, blobs_of, address=ray_address, workers=workers,
                                    num_cpus=num_cpus, num_gpus=num_gpus)
            else:
                run_local(job, p.chunks, on_chunk, workers, blobs_of, opened=opened)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
        seconds = time.perf_counter() - t0
        path, table = store.merge(items)
    return {"results": path, "table": table, "parts": written["parts"], "rows_written": written["rows"],
            "images_done": bar.done, "errors": written["errors"], "skipped": p.skipped, "seconds": seconds,
            "engine": engine, "chunk_size": chunk_size}


# ---------------------------------------------------------------- command line
def add_arguments(p, with_out: bool) -> None:
    g = p.add_argument_group("dataset runs (--images DIR|LIST.txt|FILE.parquet ... --out OUT/)")
    if with_out:
        g.add_argument("--out", help="dataset run: output folder (Parquet parts, results.parquet, maps/); "
                                     "rerun the same command to resume")
    g.add_argument("--workers", type=int, default=1,
                   help="processes of the local pool, or Ray actors with --ray (default: %(default)s)")
    g.add_argument("--chunk-size", type=int, help="images per chunk: one Parquet part each (default: 64 for "
                                                  "single-pass methods only, 2 with a black-box method)")
    g.add_argument("--batch-size", type=int, default=32, help="images per forward pass of the single-pass maps "
                                                              "(default: %(default)s)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray Data: alone, a local Ray; with an address (auto, HOST:6379, ray://HOST:10001) "
                        "join that cluster")
    g.add_argument("--num-cpus", type=float, help="--ray: CPUs per actor (default 1; also its ONNX Runtime threads)")
    g.add_argument("--num-gpus", type=float, help="--ray: GPUs per actor (default 0)")
    g.add_argument("--ship-images", action="store_true",
                   help="the driver reads the image files and sends their bytes (a cluster without a shared disk)")
    g.add_argument("--no-overlays", action="store_true", help="write the .npy maps but no PNG overlays")


def summary_means(table, methods: list[str]) -> dict:
    """Per-method means of the eval columns over the rows that succeeded (the eval table's COLUMNS)."""
    from edge_saliency.explain.session import COLUMNS

    rows = [r for r in table.to_pylist() if r["status"] == "ok"]
    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        out[m] = {}
        for key, _ in COLUMNS:
            if key == "ms":
                vals = [1000 * r["seconds"] for r in mine]
            else:
                vals = [r.get(key) for r in mine if r.get(key) is not None]
            out[m][key] = float(np.mean(vals)) if vals else None
    return out


def cmd(args, mode: str) -> int:
    """`explain --images ...` and `eval --images ... --out ...`."""
    from edge_saliency.explain import registry
    from edge_saliency.explain.session import class_index_of, format_table, method_settings, open_classifier, preprocess

    require_pyarrow()
    if not args.out:
        raise UserError(f"{mode} over a dataset needs --out (a folder)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if mode == "eval" and args.sheet:
        raise UserError("--sheet is for eval without --out; a dataset run writes an overlay per map under OUT/maps")
    if mode == "eval" and args.steps < 1:
        raise UserError("--steps must be at least 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.ray is None and (args.num_cpus is not None or args.num_gpus is not None):
        raise UserError("--num-cpus and --num-gpus are per Ray actor: add --ray")
    if args.ray is not None:
        from edge_saliency.explain.dataset_ray import import_ray

        import_ray()  # one clear line when Ray is missing, before any work
    items = list_images(args.images, exclude=out)
    classifier, model = open_classifier(args)
    names = registry.parse_methods(args.method if mode == "explain" else args.methods, model)
    class_index_of(classifier, model, args.class_name)  # a bad --class is one line, here
    if (args.class_name is not None and model is not None and not model.has_class_input
            and any(m not in registry.BLACK_BOX for m in names)):
        raise UserError(f"{model.path} was exported without a class_index input, so its single-pass maps "
                        "explain the top-1 class only; re-export with --class-input, or drop --class")
    boxes = metrics.read_boxes(args.boxes) if mode == "eval" and args.boxes else None
    refs = []
    first_rows = ParquetImages()
    for it in items:  # the reconstruction checks (eval's, maskopt's own) fill from the first readable images
        if len(refs) == 5:
            break
        try:
            blob = first_rows.get(it) if it.parquet else None
            refs.append((it.id, preprocess(classifier, model, read_image(it, blob))))
        except UserError:
            continue
    path = model.path if model is not None else classifier.path
    plain = {"plain": bool(args.plain), "mean": args.mean, "std": args.std, "bgr": bool(args.bgr),
             "input_size": args.input_size, "labels": args.labels} if model is None else {}
    job = Job(mode=mode, model=str(Path(path).resolve()), model_sha256=file_sha256(path), methods=names,
              settings=method_settings(args, names), class_name=args.class_name, plain=plain,
              provider=args.provider, threads=args.threads, batch_size=args.batch_size,
              steps=getattr(args, "steps", 32), keep=args.keep or 0.25, boxes=boxes, references=refs,
              overlays=not args.no_overlays)
    opened = (classifier, model) if args.workers <= 1 and args.ray is None else None
    if opened is None:
        del classifier, model
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        s = run(job, items, out, workers=args.workers, chunk_size=args.chunk_size, use_ray=args.ray is not None,
                ray_address=None if args.ray in (None, "local") else args.ray, num_cpus=args.num_cpus,
                num_gpus=args.num_gpus, ship_images=args.ship_images, progress=not args.quiet, log=log,
                opened=opened)
    except KeyboardInterrupt:
        print(f"interrupted: the finished chunks are in {out / 'parts'} and merged into {out / RESULTS}; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    table = s["table"]
    ok = sum(1 for v in table.column("status").to_pylist() if v == "ok")
    rate = s["images_done"] / s["seconds"] if s["seconds"] > 0 else 0.0
    print(f"wrote {s['results']}: {table.num_rows} rows ({ok} maps, {table.num_rows - ok} errors), "
          f"{len(items)} images x {len(names)} methods; this run {s['images_done']} images in {s['seconds']:.1f}s "
          f"({rate:.2f} images/s, {s['engine']}, {args.workers} worker{'s' * (args.workers > 1)}), "
          f"{s['skipped']} results kept from earlier runs")
    if mode == "eval" and ok:
        means = summary_means(table, names)
        print(format_table(means, with_pointing=boxes is not None))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"results": str(s["results"]), "images": len(items),
                                                   "methods": names, "summary": means}, indent=2))
            print(f"wrote {args.json}")
    return 0
