"""ONNX Runtime execution providers: which to ask for, with which options, and whether ORT obliged.

Order for ``provider = "auto"``: CUDA, then the other accelerators, then the CPU. **TensorRT is
never picked by auto**; it is used only when asked for (``provider = "tensorrt"``, or a list such
as ``"tensorrt,cuda"``). Why: the first session on a device builds a TensorRT engine, which takes
minutes on a Jetson (a service would look hung, and systemd's start timeout may kill it); the
engine is specific to the GPU, TensorRT version and input shape; and with fp16 on, its numbers
differ from the CPU's. CUDA starts in seconds and computes in float32 like the CPU, so it is the
right default on a GPU machine; TensorRT is the opt-in for the last factor of speed.

    providers.resolve("tensorrt", available)  -> ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider"]   (the fallback chain)
    providers.session_providers(chain, GpuOptions(...), model_path)  -> [(name, {options}), ...]
    providers.fallback(chain, session.get_providers())  -> None, or one line saying what happened

TensorRT options: the engine cache and the timing cache live in one directory (``trt_cache``;
default ``$CACHE_DIRECTORY/tensorrt``, which systemd's ``CacheDirectory=`` sets, else the
edge-saliency cache dir), engines are named after the model file and its digest (so a new model
is noticed and a first-build message is shown), fp16 and the builder workspace are settings.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edge_saliency")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# every provider this project knows, best first (bench's default rows, the known names)
PREFERENCE = (
    TENSORRT,
    CUDA,
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "XnnpackExecutionProvider",
    CPU,
)
# provider = "auto": no TensorRT (see the module doc)
AUTO_ORDER = tuple(p for p in PREFERENCE if p != TENSORRT)
GPU = (TENSORRT, CUDA)
ALIASES = {
    "tensorrt": TENSORRT, "trt": TENSORRT,
    "cuda": CUDA, "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "cpu": CPU,
}


def short_name(provider: str) -> str:
    return provider.replace("ExecutionProvider", "").lower()


def _one(requested: str, available: list[str]) -> str:
    from edge_saliency.errors import UserError

    name = ALIASES.get(requested.lower(), requested)
    if name not in PREFERENCE and name not in available:
        raise UserError(f"unknown provider {requested!r}; choose from: auto, {', '.join(ALIASES)}")
    if name not in available:
        hint = ""
        if name in GPU:
            hint = ("; for NVIDIA GPUs install onnxruntime-gpu in place of onnxruntime (on a Jetson: NVIDIA's "
                    "aarch64 wheel for your JetPack, see deploy/JETSON.md)")
        raise UserError(
            f"provider {short_name(name)} is not available in this onnxruntime build "
            f"(available: {', '.join(short_name(p) for p in available)}){hint}"
        )
    return name


def resolve(requested: str | None, available: list[str]) -> list[str]:
    """The providers to hand ORT, in order (ORT places each node on the first that takes it).

    'auto' / None -> every available provider of AUTO_ORDER (CPU last); 'cuda' -> [cuda, cpu];
    'tensorrt' -> [tensorrt, cuda (when available), cpu]: TensorRT leaves the nodes it cannot
    run to the next provider; 'tensorrt,cpu' or any comma list -> that order, CPU appended."""
    if requested in (None, "", "auto"):
        return [p for p in AUTO_ORDER if p in available] or [CPU]
    chain = []
    for part in (p.strip() for p in requested.split(",")):
        if part:
            name = _one(part, available)
            if name not in chain:
                chain.append(name)
    if not chain:
        return resolve(None, available)
    if chain == [TENSORRT] and CUDA in available:
        chain.append(CUDA)
    if CPU not in chain:
        chain.append(CPU)
    return chain


# ---------------------------------------------------------------- options per provider
@dataclass
class GpuOptions:
    """Settings of the CUDA and TensorRT providers (config keys gpu_device, trt_fp16, trt_workspace_mb, trt_cache)."""

    device_id: int = 0
    trt_fp16: bool = False  # float16 kernels where TensorRT finds them faster (numbers differ from fp32 a little)
    trt_workspace_mb: int = 1024  # the builder's scratch memory; a Jetson Nano shares 4 GB with the CPU
    trt_cache: str | None = None  # engine + timing cache folder (default: see cache_folder)
    cuda_mem_limit_mb: int | None = None  # the CUDA arena's limit (None: ORT's, all of the GPU)
    trt_max_batch: int = 8  # the engine's optimisation profile: batches 1..this (a larger one rebuilds)

    def cache_folder(self) -> Path:
        """$EDGE_SALIENCY_TRT_CACHE, the trt_cache setting, $CACHE_DIRECTORY/tensorrt (systemd's
        CacheDirectory=), else <edge-saliency cache dir>/tensorrt."""
        given = os.environ.get("EDGE_SALIENCY_TRT_CACHE") or self.trt_cache
        if given:
            return Path(given).expanduser()
        systemd = os.environ.get("CACHE_DIRECTORY")
        if systemd:  # may list several folders, separated by ':'
            return Path(systemd.split(":")[0]) / "tensorrt"
        from edge_saliency.runtime.cache import cache_dir

        return cache_dir() / "tensorrt"


def engine_prefix(model_path: str | os.PathLike) -> str:
    """Engine file names start with the model's name and a digest of its bytes: a changed model is
    a new prefix (TensorRT's own file name also hashes the graph, so nothing stale is loaded)."""
    p = Path(model_path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in p.stem)[:40]
    return f"{stem}_{h.hexdigest()[:12]}"


def cached_engines(folder: Path, prefix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}*.engine")) if folder.is_dir() else []


def profile_shapes(inputs: list[tuple[str, list]], max_batch: int) -> dict[str, str] | None:
    """TensorRT optimisation profile for inputs [(name, shape)] whose only free dimension is the
    batch: {"trt_profile_min_shapes": "image:1x224x224x3", ...opt (batch 1), ...max (max_batch)}.
    Without it a dynamic batch makes TensorRT build its engine at the first run, and again for
    every new batch size. None when another dimension is free (TensorRT then decides)."""
    mins, opts, maxs = [], [], []
    for name, shape in inputs:
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
            return None
        rest = "x".join(str(d) for d in shape[1:])
        tail = f"x{rest}" if rest else ""
        mins.append(f"{name}:1{tail}")
        opts.append(f"{name}:1{tail}")
        maxs.append(f"{name}:{max(1, max_batch)}{tail}")
    return {"trt_profile_min_shapes": ",".join(mins), "trt_profile_opt_shapes": ",".join(opts),
            "trt_profile_max_shapes": ",".join(maxs)}


def provider_options(name: str, gpu: GpuOptions | None = None, model_path: str | None = None,
                     inputs: list[tuple[str, list]] | None = None) -> dict[str, str]:
    """ORT's option dict for one provider (strings, as ORT's Python API takes them).
    inputs: the model's [(name, shape)], for TensorRT's optimisation profile."""
    gpu = gpu or GpuOptions()
    if name == CUDA:
        opts = {"device_id": str(gpu.device_id),
                # grow the arena by what is asked, not in doubling steps: a Jetson's GPU memory is its RAM
                "arena_extend_strategy": "kSameAsRequested"}
        if gpu.cuda_mem_limit_mb:
            opts["gpu_mem_limit"] = str(int(gpu.cuda_mem_limit_mb) << 20)
        return opts
    if name == TENSORRT:
        folder = str(gpu.cache_folder())
        opts = {
            "device_id": str(gpu.device_id),
            "trt_fp16_enable": "True" if gpu.trt_fp16 else "False",
            "trt_max_workspace_size": str(int(gpu.trt_workspace_mb) << 20),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": folder,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": folder,
        }
        if model_path is not None:
            opts["trt_engine_cache_prefix"] = engine_prefix(model_path)
        if inputs:
            opts.update(profile_shapes(inputs, gpu.trt_max_batch) or {})
        return opts
    return {}


def session_providers(chain: list[str], gpu: GpuOptions | None = None, model_path: str | None = None,
                      inputs: list[tuple[str, list]] | None = None) -> list[tuple[str, dict[str, str]]]:
    """The `providers=` argument of ort.InferenceSession: (name, options) for each in the chain."""
    return [(name, provider_options(name, gpu, model_path, inputs)) for name in chain]


def fallback(requested: list[str], actual: list[str]) -> str | None:
    """Compare the chain asked for with ``session.get_providers()``: None when the first choice is
    in use, else one line naming what was lost (an accelerator that did not load is the case a user
    must hear about: ORT drops it and runs on the CPU without an error)."""
    if not requested or not actual:
        return None
    if requested[0] in actual:
        return None
    lost = [short_name(p) for p in requested if p not in actual]
    runs = short_name(actual[0])
    if actual[0] == CPU and any(p in GPU for p in requested):
        why = ("its libraries (CUDA, cuDNN, TensorRT) did not load or no GPU is visible: check "
               "`python -c \"import onnxruntime as o; print(o.get_device(), o.get_available_providers())\"`, "
               "nvidia-smi / tegrastats, and LD_LIBRARY_PATH")
        return f"asked for {', '.join(lost)}, ONNX Runtime runs on {runs} (silent CPU fallback: {why})"
    return f"asked for {', '.join(lost)}, ONNX Runtime runs on {runs} (fell back)"


class BuildNotice:
    """While a TensorRT engine is built for the first time: say so at once and every ``every`` s."""

    def __init__(self, say, what: str, folder: Path, every: float = 15.0):
        self.say, self.what, self.folder, self.every = say, what, folder, every
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def __enter__(self):
        self.t0 = time.monotonic()
        self.say(f"building the TensorRT engine for {self.what} (first start on this device with these settings: "
                 f"this can take minutes on a Jetson; it is cached in {self.folder} for the next start)")
        self._thread = threading.Thread(target=self._tick, name="trt-build-notice", daemon=True)
        self._thread.start()
        return self

    def _tick(self):
        while not self._done.wait(self.every):
            self.say(f"still building the TensorRT engine ({time.monotonic() - self.t0:.0f} s)")

    def __exit__(self, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if exc[0] is None:
            self.say(f"TensorRT engine ready in {time.monotonic() - self.t0:.0f} s")
        return False


# ---------------------------------------------------------------- command line (run, bench)
def gpu_options(cfg) -> GpuOptions:
    """The GPU settings of run, serve or bench (settings.py checks their ranges)."""
    return GpuOptions(device_id=cfg.gpu_device, trt_fp16=cfg.trt_fp16, trt_workspace_mb=cfg.trt_workspace_mb,
                      trt_cache=cfg.trt_cache)
