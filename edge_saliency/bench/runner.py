"""`edge-saliency bench`: how fast are prediction + saliency maps on this device?

    edge-saliency bench                      # default model; every provider and precision available here
    edge-saliency bench --model m.onnx --provider cpu --threads 1,2,4 --precision fp32,int8 \\
                        --json out.json --plot out.png

For every (provider, threads, precision) it measures, after ``--warmup`` runs, ``--runs`` frames
(default 300: p90 is then the 270th of 300 values, stable to a few percent on a quiet machine;
MLPerf's SingleStream reports p90): inference latency p50/p90/p99/max, FPS of the whole frame
(preprocess + inference + render), per-stage medians, process CPU% and RSS, model load time.

Overhead of the saliency maps: each variant is also run as a **plain** model, the same file with
the saliency outputs and every node only they need pruned away (onnx), so the ratio is what the
maps cost. (Asking ORT for fewer outputs of the full file would not do: it runs the whole graph.)

Accuracy, in every row (as Ultralytics' benchmark puts its metric next to the speed): what the
variant gives up against the fp32 file on ONNX Runtime's CPU provider (the reference), on the
sample photographs and their mirror images (``ACCURACY_IMAGES``): top-1 agreement (the share of
images whose top-1 class is the reference's) and, for each saliency map the model outputs (smoe,
recipro, fastcam), the Pearson correlation of the variant's map with the reference's, min and
mean over the images. fp32 on another engine or provider is compared too (it is not always
bit-identical); plain variants have no maps, only the top-1.

Throughput (``--batch N``, MLPerf's Offline scenario): besides the single-stream latency, every
variant also runs batches of N frames (preprocess + one session.run), round robin as above;
the row reports images/s at batch N and the median batch latency.

Schedule: all sessions run **round robin**, one frame each per round, so drift (thermal, other
processes) hits every variant alike. ORT's intra-op threads spin after each run by default, and on
a small machine a spinning idle session steals the cores of the next one; every session here is
made with ``session.intra_op.allow_spinning = 0``. That costs a little latency on an otherwise idle
machine (threads must wake up) and is the same for every variant.

Variants (int8, plain) are made from the fp32 file into the cache dir on first use; that needs the
``onnx`` package (and onnxruntime's quantisation tools). What cannot be made or run is listed as
skipped with the reason.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_saliency.contract import PRECISIONS
from edge_saliency import contract
from edge_saliency.runtime import device_info, engines, providers
from edge_saliency.errors import UserError

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
OPENVINO_CPU = "openvino-cpu"
NO_SPINNING = {"session.intra_op.allow_spinning": "0"}
FRAME_SIZE = (480, 640)  # (h, w): a VGA camera frame


# ------------------------------------------------------------------ statistics
def latency_stats(seconds: list[float] | np.ndarray) -> dict:
    """Milliseconds: p50, p90, p99, max, mean."""
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    if a.size == 0:
        return {}
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean()), "n": int(a.size)}


# ------------------------------------------------------------------ variants on disk
def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def prune_to_plain(src: Path, out: Path) -> None:
    """The same model without its saliency outputs: keep logits and target_class and the nodes
    they need; everything only the maps needed is removed."""
    import onnx

    model = onnx.load(str(src))
    keep_out = [o for o in model.graph.output if o.name in (contract.LOGITS, contract.TARGET)]
    producer = {o: n for n in model.graph.node for o in n.output}
    needed, stack, used = set(), [o.name for o in keep_out], set()
    while stack:
        t = stack.pop()
        if t in used:
            continue
        used.add(t)
        node = producer.get(t)
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(i for i in node.input if i)
    nodes = [n for n in model.graph.node if id(n) in needed]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.output[:]
    model.graph.output.extend(keep_out)
    inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    vis = [v for v in model.graph.value_info if v.name in used]
    del model.graph.value_info[:]
    model.graph.value_info.extend(vis)
    for p in model.metadata_props:
        if p.key == contract.PREFIX + "methods":
            p.value = "[]"
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)


def variant_file(src: Path, precision: str, plain: bool, cache: Path, log, made: list | None = None) -> Path:
    """fp32 file -> the file of (precision, plain), made in ``cache`` on first use (its precision
    then appended to ``made``)."""
    if precision == "fp32" and not plain:
        return src
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"{src.stem}.{_digest(src)}"
    base = src
    if precision != "fp32":
        base = cache / f"{tag}.{precision}.onnx"
        if not base.is_file():
            try:
                from edge_saliency.graph.quantize import convert
            except ImportError as exc:
                raise RuntimeError(f"making {precision} needs the onnx package ({exc.name} missing)") from exc
            log(f"making the {precision} variant of {src.name} in {cache}")
            convert(src, base, precision, log=lambda m: None)
            if made is not None:
                made.append(precision)
    if not plain:
        return base
    out = cache / f"{tag}.{precision}.plain.onnx"
    if not out.is_file():
        try:
            import onnx  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("the plain (no saliency) variant needs the onnx package to prune the graph") from exc
        prune_to_plain(base, out)
    return out


# ------------------------------------------------------------------ one session under test
@dataclass
class Variant:
    provider: str  # an ORT provider, or "openvino-cpu" for the OpenVINO engine
    threads: int
    precision: str
    plain: bool
    engine: str = "onnxruntime"
    path: Path | None = None
    status: str = "ok"
    model: object = None
    renderer: object = None
    load_s: float = 0.0
    rss_mb: float = 0.0
    inference: list = field(default_factory=list)
    preprocess: list = field(default_factory=list)
    render: list = field(default_factory=list)
    frame: list = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    batch: list = field(default_factory=list)  # seconds per --batch N batch
    batch_size: int | None = None
    batch_error: str | None = None
    accuracy: dict | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return f"{providers.short_name(self.provider)}/{self.threads}t/{self.precision}/{'plain' if self.plain else 'saliency'}"

    @property
    def key(self) -> tuple:
        return (self.provider, self.threads, self.precision)


def open_variant(v: Variant, proc, gpu: providers.GpuOptions | None = None) -> None:
    from edge_saliency.runtime.model import SaliencyModel

    rss0 = proc.memory_info().rss
    # intra-op spinning off (see module doc); OpenVINO runs on its CPU device
    trt_built = None
    if v.provider == providers.TENSORRT:
        folder = (gpu or providers.GpuOptions()).cache_folder()
        trt_built = not providers.cached_engines(folder, providers.engine_prefix(v.path))
    model = SaliencyModel(v.path, provider=providers.short_name(v.provider) if v.engine == "onnxruntime" else None,
                          threads=v.threads, engine=v.engine, session_config=NO_SPINNING, gpu=gpu)
    v.load_s = model.load_seconds
    if v.engine == "onnxruntime" and model.engine.providers[0] != v.provider:
        raise RuntimeError(f"ONNX Runtime fell back to {providers.short_name(model.engine.providers[0])}")
    if trt_built is not None:
        v.note = "TensorRT engine built (load_s includes the build)" if trt_built else "TensorRT engine from the cache"
    v.model = model
    v.rss_mb = (proc.memory_info().rss - rss0) / 1e6
    try:
        from edge_saliency.pipeline.render import Renderer
    except ImportError:
        return
    if not v.plain:
        v.renderer = Renderer(view="fastcam", outputs=model.outputs, hud=True, provider=v.provider)


def run_once(v: Variant, frame: np.ndarray, proc) -> None:
    c0, t0 = proc.cpu_times(), time.perf_counter()
    result = v.model.predict(frame)
    t1 = time.perf_counter()
    if v.renderer is not None:
        v.renderer.render(frame, result)
    t2 = time.perf_counter()
    c1 = proc.cpu_times()
    v.cpu_s += (c1.user - c0.user) + (c1.system - c0.system)
    v.wall_s += t2 - t0
    v.preprocess.append(result.timings["preprocess"])
    v.inference.append(result.timings["inference"])
    if v.renderer is not None:
        v.render.append(t2 - t1)
    v.frame.append(t2 - t0)


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or forced)."""

    def __init__(self, total: int, label: str, stream=None, force: bool = False, width: int = 30):
        self.total, self.label, self.width = max(1, total), label, width
        self.stream = stream or sys.stderr
        self.enabled = force or getattr(self.stream, "isatty", lambda: False)()
        self.last = -1.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self.total and now - self.last < 0.2:
            return
        self.last = now
        filled = int(self.width * done / self.total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


# ------------------------------------------------------------------ accuracy against fp32
MAP_KINDS = ("smoe", "recipro", "fastcam")
ACCURACY_IMAGES = "the sample photographs (edge_saliency.samples) and their mirror images"


def accuracy_images() -> dict[str, np.ndarray]:
    from edge_saliency import samples

    out = {}
    for name, img in samples.photos().items():
        out[name] = img
        out[f"{name}-mirrored"] = np.ascontiguousarray(img[:, ::-1])
    return out


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (1.0 for two constant maps that are equal, 0.0 for one constant)."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"map shapes differ: {np.shape(a)} vs {np.shape(b)}")
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return 1.0 if (sx == sy and np.allclose(x, y)) else 0.0
    return float(np.clip(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy), -1.0, 1.0))


def agreement(reference: dict, results: dict) -> dict:
    """{image: Result} of the reference and of a variant -> top-1 agreement and map correlations."""
    names = [n for n in reference if n in results]
    same = [results[n].class_index == reference[n].class_index for n in names]
    maps = {}
    for kind in MAP_KINDS:
        rs = []
        for n in names:
            ma, mb = reference[n].map(kind), results[n].map(kind)
            if ma is None or mb is None:
                rs = []
                break
            rs.append(map_correlation(ma, mb))
        if rs:
            maps[kind] = {"min": float(min(rs)), "mean": float(np.mean(rs)), "per_image": dict(zip(names, rs))}
    out = {"images": len(names), "top1_matches": int(sum(same)), "top1_agreement": float(np.mean(same)) if names else None,
           "top1_differs_on": [n for n, ok in zip(names, same) if not ok], "maps": maps}
    out["map_r_min"] = min(m["min"] for m in maps.values()) if maps else None
    out["map_r_mean"] = float(np.mean([m["mean"] for m in maps.values()])) if maps else None
    return out


def measure_accuracy(variants: list[Variant], src: Path, images: dict[str, np.ndarray]) -> str:
    """Each measured variant's agreement with fp32 on ORT's CPU provider; returns the reference's name."""
    ref = next((v for v in variants if v.model is not None and v.engine == "onnxruntime" and v.precision == "fp32"
                and not v.plain and v.provider == "CPUExecutionProvider"), None)
    if ref is not None:
        ref_model = ref.model
    else:
        from edge_saliency.runtime.model import SaliencyModel

        ref_model = SaliencyModel(src, provider="cpu", threads=None, session_config=NO_SPINNING)
    reference = {n: ref_model.predict(img) for n, img in images.items()}
    for v in variants:
        if v.model is None or v.status != "ok":
            continue
        try:
            v.accuracy = agreement(reference, {n: v.model.predict(img) for n, img in images.items()})
        except Exception as exc:  # one variant failing must not end the run
            v.accuracy = {"error": str(exc).splitlines()[0][:120]}
    return "cpu/fp32 (onnxruntime)"


def measure_batches(variants: list[Variant], frame: np.ndarray, batch: int, runs: int, warmup: int) -> None:
    """MLPerf Offline-style throughput: batches of ``batch`` frames, round robin over the variants."""
    frames = [frame] * batch
    live = [v for v in variants if v.model is not None and v.status == "ok"]
    for _ in range(warmup):
        for v in list(live):
            try:
                v.model.predict_batch(frames)
            except Exception as exc:
                v.batch_error = str(exc).splitlines()[0][:120]
                live.remove(v)
    for i in range(runs):
        k = i % max(1, len(live))
        for v in live[k:] + live[:k]:
            t0 = time.perf_counter()
            v.model.predict_batch(frames)
            v.batch.append(time.perf_counter() - t0)


# ------------------------------------------------------------------ the run
def measure(variants: list[Variant], frame: np.ndarray, runs: int, warmup: int, progress: Progress | None = None,
            gpu: providers.GpuOptions | None = None):
    import psutil

    proc = psutil.Process()
    live = [v for v in variants if v.status == "ok"]
    for v in live:
        try:
            open_variant(v, proc, gpu)
        except (UserError, RuntimeError, Exception) as exc:  # one variant failing must not end the run
            v.status = f"error: {str(exc).splitlines()[0][:120]}"
    live = [v for v in live if v.status == "ok"]
    for _ in range(max(1, warmup)):  # a variant that cannot run a frame is reported, the others go on
        for v in list(live):
            try:
                v.model.predict(frame)
            except Exception as exc:
                v.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                v.model = None
                live.remove(v)
    for v in live:  # warm-up does not count
        v.cpu_s = v.wall_s = 0.0
    for i in range(runs):
        for v in live:
            run_once(v, frame, proc)
        if progress:
            progress.update(i + 1)
    return memory(proc)


def memory(proc) -> dict:
    """{"rss": bytes now, with every variant loaded; "peak": the process's high-water mark}: the peak
    also holds the making of variants in this run (int8 calibration keeps every activation of its
    images: gigabytes), which a device that is given the files never pays."""
    peak = getattr(proc.memory_info(), "peak_wset", None)
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except ImportError:
        pass
    return {"rss": proc.memory_info().rss, "peak": peak}


def summarise(variants: list[Variant]) -> list[dict]:
    plain_p50 = {v.key: latency_stats(v.inference).get("p50") for v in variants if v.plain and v.inference}
    rows = []
    for v in variants:
        row = {"variant": v.name, "provider": providers.short_name(v.provider), "threads": v.threads,
               "precision": v.precision, "saliency": not v.plain, "status": v.status,
               "file": str(v.path) if v.path else None, "note": v.note or None,
               "size_mb": v.path.stat().st_size / 1e6 if v.path and v.path.is_file() else None}
        if v.inference:
            inf = latency_stats(v.inference)
            frame_mean = float(np.mean(v.frame))
            row.update(
                load_s=v.load_s, rss_mb=v.rss_mb, inference_ms=inf,
                preprocess_ms_p50=latency_stats(v.preprocess)["p50"],
                render_ms_p50=latency_stats(v.render)["p50"] if v.render else None,
                frame_ms=latency_stats(v.frame), fps=1.0 / frame_mean, inference_fps=1e3 / inf["mean"],
                cpu_percent=100.0 * v.cpu_s / v.wall_s if v.wall_s else None,
            )
            base = plain_p50.get(v.key)
            row["overhead"] = inf["p50"] / base if (not v.plain and base) else None
        if v.accuracy is not None:
            row["accuracy"] = v.accuracy
        if v.batch:
            n = v.batch_size
            med = float(np.median(v.batch))
            row["batch"] = {"size": n, "runs": len(v.batch), "images_per_s": n * len(v.batch) / float(np.sum(v.batch)),
                            "latency_ms_p50": med * 1e3, "images_per_s_at_p50": n / med}
        elif v.batch_error:
            row["batch"] = {"error": v.batch_error}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """One row per variant, in the style of `yolo benchmark`: speed, then what it costs in accuracy."""
    batch = next((r["batch"]["size"] for r in rows if r.get("batch", {}).get("size")), None)
    head = (f"{'Variant':<30} {'Status':<7} {'Size(MB)':>8} {'Load(s)':>7} {'p50(ms)':>8} {'p90(ms)':>8} "
            f"{'p99(ms)':>8} {'max(ms)':>8} {'FPS':>6} {'Overhead':>8} {'pre(ms)':>7} {'render(ms)':>10} {'CPU%':>5}"
            f" {'Top1=fp32':>9} {'r min':>7} {'r mean':>7}" + (f" {f'img/s@{batch}':>10}" if batch else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        size = f"{r['size_mb']:.1f}" if r.get("size_mb") else "-"
        if "inference_ms" not in r:
            lines.append(f"{r['variant']:<30} {'✗':<7} {size:>8}  {r['status']}")
            continue
        i = r["inference_ms"]
        over = f"{r['overhead']:.2f}x" if r.get("overhead") else ("base" if not r["saliency"] else "-")
        render = f"{r['render_ms_p50']:.2f}" if r.get("render_ms_p50") is not None else "n/a"
        cpu = f"{r['cpu_percent']:.0f}" if r.get("cpu_percent") is not None else "-"
        acc = r.get("accuracy") or {}
        top1 = f"{acc['top1_matches']}/{acc['images']}" if acc.get("images") else "-"
        rmin = f"{acc['map_r_min']:.5f}" if acc.get("map_r_min") is not None else "-"
        rmean = f"{acc['map_r_mean']:.5f}" if acc.get("map_r_mean") is not None else "-"
        thr = ""
        if batch:
            b = r.get("batch") or {}
            thr = f" {b['images_per_s']:>10.1f}" if "images_per_s" in b else f" {'✗':>10}"
        lines.append(f"{r['variant']:<30} {'✓':<7} {size:>8} {r['load_s']:>7.2f} {i['p50']:>8.2f} {i['p90']:>8.2f} "
                     f"{i['p99']:>8.2f} {i['max']:>8.2f} {r['fps']:>6.1f} {over:>8} {r['preprocess_ms_p50']:>7.2f} "
                     f"{render:>10} {cpu:>5} {top1:>9} {rmin:>7} {rmean:>7}{thr}")
    return "\n".join(lines)


def plot(rows: list[dict], variants: list[Variant], path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UserError("--plot needs matplotlib: pip install 'edge-saliency[plot]'") from exc
    data = [(v.name, np.asarray(v.inference) * 1e3) for v in variants if v.inference]
    if not data:
        raise UserError("nothing was measured, nothing to plot")
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(data) + 2))
    ax.boxplot([d for _, d in data], vert=False, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(data) + 1), [n for n, _ in data])
    ax.set_xlabel("inference latency (ms); box p25-p75, whiskers p1-p99")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ command line
def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{what} wants comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise UserError(f"{what} wants positive integers, got {text!r}")
    return vals


def plan(args, available: list[str], can_make: bool) -> tuple[list[Variant], list[str]]:
    """Which (provider, threads, precision, plain) to run, and what is skipped and why."""
    skipped = []
    unavailable: list[tuple[str, str]] = []  # GPU providers asked for by name that this ORT lacks
    if args.provider in (None, "", "all"):
        provs = [p for p in providers.PREFERENCE if p in available]
    else:
        provs = []
        for name in (n.strip() for n in args.provider.split(",")):
            if not name:
                continue
            full = providers.ALIASES.get(name.lower(), name)
            if full in providers.GPU and full not in available:  # a row that says why, not the end of the run
                unavailable.append((full, f"unavailable: {short_reason(full, available)}"))
                continue
            provs.append(providers.resolve(name, available)[0])
    threads = _ints(args.threads, "--threads") if args.threads else [os.cpu_count() or 1]
    if args.precision:
        precs = [p.strip() for p in args.precision.split(",") if p.strip()]
        bad = [p for p in precs if p not in PRECISIONS]
        if bad:
            raise UserError(f"unknown precision {bad[0]!r}; choose from: {', '.join(PRECISIONS)}")
        explicit = True
    else:
        precs, explicit = list(PRECISIONS), False
    if args.engine in (None, "", "all"):
        engine_names = engines.available_engines()
    else:
        engine_names = [e.strip() for e in args.engine.split(",") if e.strip()]
        for name in engine_names:
            if name not in engines.ENGINES:
                raise UserError(f"unknown engine {name!r}; choose from: {', '.join(engines.ENGINES)}")
            if name not in engines.available_engines():
                raise UserError(f"the {name} engine is not installed: pip install 'edge-saliency[{name}]'")
    if "onnxruntime" not in engine_names:
        provs = []
    if "openvino" in engine_names:
        provs = provs + [OPENVINO_CPU]
    variants = []
    for prov in provs:
        engine = "openvino" if prov == OPENVINO_CPU else "onnxruntime"
        for prec in precs:
            if prec != "fp32" and not can_make:
                skipped.append(f"{providers.short_name(prov)}/{prec}: cannot make it here (needs the onnx package; "
                               f"pip install onnx, or export it elsewhere with --precision {prec} and pass --model)")
                continue
            if prec == "fp16" and prov not in GPU_PROVIDERS and not explicit:
                skipped.append(f"{providers.short_name(prov)}/fp16: fp16 is for GPU providers "
                               "(ask with --precision fp16 to run it on the CPU anyway)")
                continue
            for t in threads:
                variants.append(Variant(prov, t, prec, plain=False, engine=engine))
                if args.plain:
                    if can_make:
                        variants.append(Variant(prov, t, prec, plain=True, engine=engine))
                    elif prec == "fp32" and (prov, t) == (provs[0], threads[0]):
                        skipped.append("plain (no saliency) baseline: needs the onnx package to prune the graph")
    for prov, status in unavailable:
        for prec in (precs if explicit else ["fp32", "fp16"]):
            for t in threads:
                variants.append(Variant(prov, t, prec, plain=False, status=status))
    return variants, skipped


def short_reason(provider: str, available: list[str]) -> str:
    return (f"this onnxruntime has no {providers.short_name(provider)} provider (it has "
            f"{', '.join(providers.short_name(p) for p in available)}; install onnxruntime-gpu)")


def bench_frame(image: str | None, log) -> np.ndarray:
    """The frame every variant runs on: --image, else scikit-image's cat, else (no scikit-image, as on
    a device installed without extras) the synthetic source's frame, said in the log."""
    import cv2

    if image:
        img = cv2.imread(image, cv2.IMREAD_COLOR)
        if img is None:
            raise UserError(f"--image {image}: not an image OpenCV can read")
        return img
    from edge_saliency import samples

    try:
        return samples.photo("chelsea")
    except UserError:
        from edge_saliency.pipeline.sources import SyntheticSource

        log("no scikit-image here: benchmarking on the synthetic source's frame (pass --image FILE for a photograph)")
        src = SyntheticSource("synthetic")
        src.open()
        return src.read()


def run_bench(args, default_model) -> int:
    """`edge-saliency bench` with its settings (settings.resolve("bench", ...): args.runs, args.precision ...).
    default_model: log_fn -> the path of the model to use when args.model is None."""
    import onnxruntime as ort

    from edge_saliency.runtime.cache import cache_dir

    for out in (args.json, args.plot):
        if out and not Path(out).resolve().parent.is_dir():
            raise UserError(f"cannot write {out}: its directory does not exist")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    src = Path(args.model) if args.model else default_model(log)
    if not src.is_file():
        raise UserError(f"model file not found: {src}")
    try:
        import onnx  # noqa: F401
        can_make = True
    except ImportError:
        can_make = False
    available = ort.get_available_providers()
    variants, skipped = plan(args, available, can_make)
    cache = Path(args.cache) if args.cache else cache_dir() / "bench"
    made: list[str] = []
    for v in variants:
        if v.status != "ok":
            continue
        try:
            v.path = variant_file(src, v.precision, v.plain, cache, log, made)
        except Exception as exc:
            v.status = f"error: {str(exc).splitlines()[0][:120]}"
    import cv2

    frame = cv2.resize(bench_frame(args.image, log), (FRAME_SIZE[1], FRAME_SIZE[0]), interpolation=cv2.INTER_AREA)
    gpu = providers.gpu_options(args)
    device = device_info.collect()
    log(f"device: {device_info.summary(device)}")
    for s in skipped:
        log(f"skipped: {s}")
    n_live = sum(v.status == "ok" for v in variants)
    log(f"{n_live} variants, round robin, {args.warmup} warm-up + {args.runs} measured frames each "
        f"({FRAME_SIZE[1]}x{FRAME_SIZE[0]} frame), intra-op spinning off")
    progress = Progress(args.runs, "bench", force=args.progress)
    t0 = time.perf_counter()
    mem = measure(variants, frame, args.runs, args.warmup, progress, gpu)
    batch_runs = 0
    if args.batch:
        batch_runs = max(5, -(-args.runs // args.batch))
        log(f"throughput: batches of {args.batch}, {batch_runs} per variant, round robin")
        for v in variants:
            v.batch_size = args.batch
        measure_batches(variants, frame, args.batch, batch_runs, warmup=min(2, args.warmup) or 1)
    reference = None
    if args.accuracy:
        try:
            images = accuracy_images()
        except UserError as exc:
            log(f"accuracy skipped: {exc}")
        else:
            log(f"accuracy: {len(images)} images, against fp32 on ONNX Runtime's CPU provider")
            reference = measure_accuracy(variants, src, images)
    rows = summarise(variants)
    text = table(rows)
    print(f"edge-saliency bench: {src.name}, {args.runs} runs per variant after {args.warmup} warm-up, "
          f"latency = inference (session.run), FPS = whole frame (preprocess + inference + fastcam render)")
    print(f"device: {device_info.summary(device)}")
    print(text)
    if reference:
        print(f"Top1=fp32: images whose top-1 class is that of fp32 on ONNX Runtime's CPU provider; r min / r mean: "
              f"Pearson correlation of each saliency map with fp32's, worst map kind's minimum and mean of the map "
              f"kinds' means over the images ({ACCURACY_IMAGES})")
    if args.batch:
        print(f"img/s@{args.batch}: throughput with batches of {args.batch} frames (preprocess + one session.run; "
              f"MLPerf Offline-style), {batch_runs} batches per variant")
    for s in skipped:
        print(f"skipped: {s}")
    for r in rows:
        if r.get("note"):
            print(f"{r['variant']}: {r['note']}")
    rss, peak = mem["rss"], mem["peak"]
    print(f"RSS with all variants loaded: {rss / 1e6:.0f} MB" + (
        f" (process peak {peak / 1e6:.0f} MB while making variants: {', '.join(made)})" if made and peak and peak > 1.5 * rss
        else f" (process peak {peak / 1e6:.0f} MB)" if peak else ""))
    report = {
        "command": "edge-saliency " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else " ".join(sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": str(src),
        "device": device, "runs": args.runs, "warmup": args.warmup, "frame_size": list(FRAME_SIZE),
        "schedule": "round robin, one frame per variant per round, session.intra_op.allow_spinning=0",
        "seconds": time.perf_counter() - t0, "rss_mb": mem["rss"] / 1e6,
        "peak_rss_mb": mem["peak"] / 1e6 if mem["peak"] else None, "variants_made_here": made,
        "variants": rows, "skipped": skipped, "table": text,
        "accuracy": {"reference": reference, "images": ACCURACY_IMAGES} if reference else None,
        "batch": {"size": args.batch, "runs": batch_runs} if args.batch else None,
        "raw_inference_ms": {v.name: [round(x * 1e3, 4) for x in v.inference] for v in variants if v.inference},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        plot(rows, variants, args.plot, f"{src.name} on {device.get('cpu')}, {args.runs} runs each")
        print(f"wrote {args.plot}")
    return 0 if any(v.inference for v in variants) else 1
