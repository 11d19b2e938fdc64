"""Images per second of a dataset run (`explain --images ... --out`): single-pass maps and DE-CAM,
1 vs 2 workers, the local runner (in-process / process pool) vs Ray Data actors, and a projection
to N nodes from the per-worker rate.

    python benchmarks/explain_dataset_throughput.py --model m.onnx --json benchmarks/results/explain_dataset_throughput.json

Each configuration runs ``--rounds`` times, interleaved (config A, B, C, D, then again), on a fresh
output folder; we report medians. Two rates per run:
- *wall*: images / (time from the call to the merged results.parquet), startup included (spawning
  the pool and loading the model in each worker; Ray's actors; not ``ray.init``, which is timed
  once apart);
- *steady*: images / (last chunk's end - first chunk's start), on the workers' clocks: the rate
  without the startup (model loading, actor creation), scheduling gaps between chunks included;
- *per worker*: images / the time workers spent inside chunks (the projection's unit).
Every worker runs ONNX Runtime with 1 thread, so a worker is one core's worth.

The N-node figure is a projection, not a measurement: N x workers per node x the per-worker steady
rate (measured on one Ray actor), capped by what one driver can write (its measured time per image
in ``Store.write_chunk``); it assumes each node's workers run as fast as one worker alone here,
which a real node's memory bandwidth and shared caches will not quite allow.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_saliency.explain import dataset, dataset_driver  # noqa: E402
from edge_saliency.explain import registry  # noqa: E402


def make_images(folder: Path, n: int) -> None:
    """n distinct photographs: crops and flips of scikit-image's samples."""
    from edge_saliency import samples

    base = [samples.photo(p) for p in ("chelsea", "coffee", "astronaut", "rocket")]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = base[i % len(base)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y:y + ch, x:x + cw]
        if i % 2:
            crop = crop[:, ::-1]
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), np.ascontiguousarray(crop))


class Timed:
    """Records when each chunk reaches the driver and how long writing it takes."""

    def __init__(self):
        self.events, self.spans, self.write_s, self.images = [], [], 0.0, 0
        self._orig = dataset.Store.write_chunk

    def __enter__(self):
        me = self

        def write_chunk(store, rows):
            me.spans.append((rows[0]["_chunk_start"], rows[0]["_chunk_end"], rows[0]["worker"],
                             len({r["image"] for r in rows})))
            t = time.perf_counter()
            path = me._orig(store, rows)
            me.write_s += time.perf_counter() - t
            n = len({r["image"] for r in rows})
            me.images += n
            me.events.append((time.perf_counter(), n))
            return path

        dataset.Store.write_chunk = write_chunk
        return self

    def __exit__(self, *exc):
        dataset.Store.write_chunk = self._orig


def make_job(model_path: str, methods: list[str], budget: int | None) -> dataset.Job:
    settings = {}
    for m in methods:
        if m in registry.SETTINGS:
            settings[m] = registry.SETTINGS[m](budget=budget)
    return dataset.Job(mode="explain", model=str(Path(model_path).resolve()), model_sha256=dataset.file_sha256(model_path),
                       methods=methods, settings=settings, provider="cpu", threads=1, batch_size=16)


def one_run(job, items, out: Path, engine: str, workers: int, chunk: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    with Timed() as t:
        t0 = time.perf_counter()
        s = dataset_driver.run(job, items, out, workers=workers, chunk_size=chunk, use_ray=engine == "ray",
                        num_cpus=1, progress=False, log=lambda m: None)
        wall = time.perf_counter() - t0
    assert s["table"].num_rows == len(items) * len(job.methods)
    # worker-side clocks: from the first chunk's start to the last chunk's end (every worker's model
    # is loaded by then); busy = the time workers spent inside chunks
    start = min(s for s, _, _, _ in t.spans)
    end = max(e for _, e, _, _ in t.spans)
    busy = sum(e - s for s, e, _, _ in t.spans)
    return {"wall_s": wall, "wall_ips": len(items) / wall, "steady_ips": t.images / (end - start),
            "per_worker_ips": t.images / busy, "workers_seen": len({w for _, _, w, _ in t.spans}),
            "driver_write_s_per_image": t.write_s / t.images}


def markdown(report: dict) -> str:
    """The tables of benchmarks/results/explain_dataset_throughput.md from the JSON report."""
    lines = ["| workload | runner | workers | wall img/s | steady img/s (min-max) | per worker img/s | "
             "workers that got chunks |", "|---|---|---:|---:|---:|---:|---:|"]
    for wname, per in report["medians"].items():
        for cfg, m in per.items():
            engine, n = cfg.rsplit("-", 1)
            runner = "Ray Data actors" if engine == "ray" else ("in-process" if n == "1" else "process pool")
            lo, hi = m["steady_ips_min_max"]
            seen = sorted({r["workers_seen"] for r in report["runs"][wname][cfg]})
            lines.append(f"| {wname} | {runner} | {n} | {m['wall_ips']:.2f} | {m['steady_ips']:.2f} ({lo:.2f}-{hi:.2f}) "
                         f"| {m['per_worker_ips']:.2f} | {'/'.join(map(str, seen))} |")
    proj = report["projection"]
    k = proj["workers_per_node"]
    nodes = list(next(v for key, v in proj.items() if key != "workers_per_node")["nodes"])
    lines += ["", f"Projection (not a measurement): N nodes x {k} workers x the per-worker rate of one Ray actor, "
              "capped by the driver's measured write time per image.", "",
              "| workload | per worker img/s | driver cap img/s | " + " | ".join(f"{n} node{'s' * (int(n) > 1)}"
                                                                          for n in nodes) + " |",
              "|---|---:|---:|" + "---:|" * len(nodes)]
    for wname, v in proj.items():
        if wname == "workers_per_node":
            continue
        lines.append(f"| {wname} | {v['per_worker_ips']:.2f} | {v['driver_cap_ips']:.0f} | "
                     + " | ".join(f"{v['nodes'][n]:.1f}" for n in nodes) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", help="print the markdown tables of an earlier --json report and exit")
    ap.add_argument("--model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--single-images", type=int, default=64)
    ap.add_argument("--decam-images", type=int, default=6)
    ap.add_argument("--decam-budget", type=int, default=241)
    ap.add_argument("--nodes", default="1,4,16,64")
    ap.add_argument("--workers-per-node", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return 0
    if not args.model:
        ap.error("--model is required")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="es_dataset_bench_"))
    make_images(tmp / "single", args.single_images)
    make_images(tmp / "decam", args.decam_images)
    workloads = {
        "single-pass (smoe,recipro,fastcam)": (make_job(args.model, ["smoe", "recipro", "fastcam"], None),
                                               dataset.list_images([str(tmp / "single")]), 16),
        f"decam (budget {args.decam_budget})": (make_job(args.model, ["decam"], args.decam_budget),
                                                dataset.list_images([str(tmp / "decam")]), 1),
    }
    configs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray_init_s = time.perf_counter() - t0
    results = {w: {f"{e}-{n}": [] for e, n in configs} for w in workloads}
    try:
        for rnd in range(args.rounds):
            for wname, (job, items, chunk) in workloads.items():
                for engine, n in configs:
                    r = one_run(job, items, tmp / "out", engine, n, chunk)
                    results[wname][f"{engine}-{n}"].append(r)
                    print(f"round {rnd + 1} {wname:<36} {engine}-{n}: wall {r['wall_ips']:.2f} img/s, "
                          f"steady {r['steady_ips']:.2f} img/s, per worker {r['per_worker_ips']:.2f} img/s "
                          f"({r['workers_seen']} seen)", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {}
    for wname, per in results.items():
        med[wname] = {}
        for cfg, runs in per.items():
            med[wname][cfg] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            med[wname][cfg]["wall_ips_min_max"] = [min(r["wall_ips"] for r in runs), max(r["wall_ips"] for r in runs)]
            med[wname][cfg]["steady_ips_min_max"] = [min(r["steady_ips"] for r in runs),
                                                      max(r["steady_ips"] for r in runs)]
    nodes = [int(v) for v in args.nodes.split(",")]
    projection = {}
    for wname in workloads:
        per_worker = med[wname]["ray-1"]["per_worker_ips"]
        write = statistics.median(med[wname][c]["driver_write_s_per_image"] for c in med[wname])
        cap = 1.0 / write
        projection[wname] = {"per_worker_ips": per_worker, "driver_cap_ips": cap,
                             "nodes": {n: min(n * args.workers_per_node * per_worker, cap) for n in nodes}}
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "note": "2 vCPUs shared with other agents' jobs"},
              "rounds": args.rounds, "ray_init_s": ray_init_s, "medians": med, "runs": results,
              "projection": {"workers_per_node": args.workers_per_node, **projection}}
    print(json.dumps({"ray_init_s": ray_init_s, "medians": med, "projection": projection}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
