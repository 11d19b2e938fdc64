"""Inference engines: one small interface, two implementations, both reading the same .onnx.

    engine = open_engine("m.onnx", "onnxruntime" | "openvino" | "auto", provider=..., threads=...)
    engine.run(["logits", "smoe"], {"image": batch}) -> [array, array]

ONNX Runtime is the default (and the engine for CUDA/TensorRT on a Jetson). OpenVINO is an
optional extra (pip install "edge-saliency[openvino]"), often faster on Intel and ARM CPUs.
``auto`` probes every available engine once per (model file, machine), caches the choice and its
figures under the cache dir, and probes again when either changes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from edge_saliency.runtime import providers
from edge_saliency.errors import UserError

log = logging.getLogger("edge_saliency")

ENGINES = ("onnxruntime", "openvino")
PROBE_RUNS = 30


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, path: str, provider: str | None = "auto", threads: int | None = None,
                 session_config: dict[str, str] | None = None, gpu: providers.GpuOptions | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        for key, value in (session_config or {}).items():  # e.g. session.intra_op.allow_spinning
            opts.add_session_config_entry(key, value)
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        requested = providers.resolve(provider, ort.get_available_providers())
        self.requested = requested
        gpu = gpu or providers.GpuOptions()
        inputs = _input_shapes(ort, path) if providers.TENSORRT in requested else None
        chain = providers.session_providers(requested, gpu, path, inputs)
        notice = None
        if providers.TENSORRT in requested:
            folder = gpu.cache_folder()
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the TensorRT cache folder {folder} ({exc.strerror}); set trt_cache "
                                "to a writable folder (config key trt_cache, or $EDGE_SALIENCY_TRT_CACHE)") from None
            if not providers.cached_engines(folder, providers.engine_prefix(path)):
                notice = providers.BuildNotice(log.info, Path(path).name, folder)
        try:
            if notice is not None:
                with notice:  # the engine is built with the session, or at the first run: warm it up inside
                    self.session = ort.InferenceSession(path, opts, providers=chain)
                    _warm_up(self.session)
            else:
                self.session = ort.InferenceSession(path, opts, providers=chain)
        except Exception as exc:
            raise UserError(f"cannot load {path} with ONNX Runtime: {_first_line(exc)}") from exc
        self.providers = self.session.get_providers()
        self.fallback = providers.fallback(requested, self.providers)
        if self.fallback:
            log.warning("%s", self.fallback)
        self.device = providers.short_name(self.providers[0])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(names, feeds)


def quiet_cpu_session(model, optimise: bool = True):
    """An ONNX Runtime CPU session that logs only errors, of a file path or an in-memory ModelProto
    (graph checks, calibration, metadata; not the live engine). optimise=False: no graph
    optimisation (cheap to open, and every tensor the graph names can be an output)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimise:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, (str, bytes)) else model.SerializeToString() if hasattr(model, "SerializeToString") \
        else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _input_shapes(ort, path: str) -> list[tuple[str, list]] | None:
    """The model's inputs [(name, shape)], read by a CPU session with no graph optimisation (cheap)."""
    try:
        s = quiet_cpu_session(path, optimise=False)
        return [(i.name, list(i.shape)) for i in s.get_inputs()]
    except Exception:  # the real session below reports what is wrong with the file
        return None


_DTYPES = {"tensor(uint8)": np.uint8, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
           "tensor(float)": np.float32, "tensor(float16)": np.float16}


def _warm_up(session) -> None:
    """One run on zeros at batch 1 (a free batch dimension is 1, class_index -1 = the top-1)."""
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dtype = _DTYPES.get(i.type, np.float32)
        feeds[i.name] = np.full(shape, -1, dtype) if i.name == "class_index" else np.zeros(shape, dtype)
    session.run(None, feeds)


class OpenVINOEngine:
    name = "openvino"

    def __init__(self, path: str, device: str | None = None, threads: int | None = None):
        try:
            import openvino as ov
        except ModuleNotFoundError as exc:
            raise UserError("the openvino engine is not installed: pip install 'edge-saliency[openvino]'") from exc
        except (ImportError, OSError) as exc:  # installed, but a system library it needs is missing
            from edge_saliency.runtime.sysdeps import import_error_line

            raise UserError(f"the openvino engine cannot load: {import_error_line(exc, 'openvino')}") from exc
        core = ov.Core()
        device = (device or "CPU").upper()
        if device in ("AUTO", "CPU") or device not in core.available_devices:
            if device not in ("AUTO", "CPU"):
                raise UserError(f"OpenVINO device {device} is not present (available: {', '.join(core.available_devices)})")
            device = "CPU"
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = core.read_model(path)
            self.compiled = core.compile_model(self.model, device, config)
        except Exception as exc:
            raise UserError(f"cannot load {path} with OpenVINO: {_first_line(exc)}") from exc
        self.request = self.compiled.create_infer_request()
        self.device = device.lower()
        self.providers = [f"OpenVINO:{device}"]
        self.inputs = [i.get_any_name() for i in self.model.inputs]
        self.outputs = [o.get_any_name() for o in self.model.outputs]

    def metadata(self) -> dict[str, str]:
        rt = self.model.get_rt_info()
        if "framework" not in rt:
            return {}
        return {k: v.astype(str) if hasattr(v, "astype") else str(v) for k, v in rt["framework"].items()}

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feeds)
        by_name = {port.get_any_name(): value for port, value in result.items()}
        return [np.asarray(by_name[n]) for n in names]


def available_engines() -> list[str]:
    found = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        found.append("openvino")
    except (ImportError, OSError) as exc:  # not installed, or cannot load its libraries: not available here
        if not isinstance(exc, ModuleNotFoundError):
            log.debug("openvino is installed but cannot load: %s", exc)
    return found


def _engine_device_for(name: str, provider: str | None) -> str | None:
    """--provider means an ORT provider for onnxruntime and a device (cpu, gpu, npu) for openvino."""
    if name == "openvino":
        return None if provider in (None, "", "auto") else provider
    return provider


def create(name: str, path: str, provider: str | None = "auto", threads: int | None = None,
           session_config: dict[str, str] | None = None, gpu: providers.GpuOptions | None = None):
    """session_config: ONNX Runtime session config entries (OpenVINO has none to take);
    gpu: CUDA/TensorRT settings (providers.GpuOptions)."""
    if name == "onnxruntime":
        return OnnxRuntimeEngine(path, provider, threads, session_config, gpu)
    if name == "openvino":
        return OpenVINOEngine(path, _engine_device_for(name, provider), threads)
    raise UserError(f"unknown engine {name!r}; choose from: auto, {', '.join(ENGINES)}")


# ---------------------------------------------------------------- auto: probe once, cache
def _machine_key() -> str:
    from edge_saliency.runtime.device_info import cpu_model

    return f"{platform.machine()}|{cpu_model()}|{os.cpu_count()}"


def _model_key(path: str) -> str:
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return f"{st.st_size}|{h.hexdigest()[:16]}"


def _versions() -> dict[str, str]:
    out = {}
    for name in available_engines():
        mod = __import__(name)
        out[name] = getattr(mod, "__version__", "?")
    return out


def probe(engine, feeds: dict[str, np.ndarray], runs: int = PROBE_RUNS) -> float:
    """Median seconds of one run of all outputs, after a short warm-up."""
    names = engine.outputs
    for _ in range(3):
        engine.run(names, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.run(names, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def choose_auto(path: str, feeds: dict[str, np.ndarray], cache_file: Path, provider=None, threads=None,
                session_config: dict[str, str] | None = None, gpu=None):
    """The faster engine on this machine for this model: cached, else probed (and cached)."""
    key = {"model": _model_key(path), "machine": _machine_key(), "versions": _versions(),
           "threads": threads, "provider": provider, "ort_session": dict(sorted((session_config or {}).items()))}
    cache = {}
    if cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    entry = cache.get(str(Path(path).resolve()))
    if entry and entry.get("key") == key and entry.get("engine") in available_engines():
        log.info("engine auto: %s (cached probe: %s)", entry["engine"],
                 ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in entry["median_s"].items()))
        return create(entry["engine"], path, provider, threads, session_config, gpu=gpu), entry
    engines, figures = {}, {}
    for name in available_engines():
        try:
            engines[name] = create(name, path, provider, threads, session_config, gpu=gpu)
            figures[name] = probe(engines[name], feeds)
        except UserError as exc:
            log.warning("engine auto: %s unavailable: %s", name, exc)
    if not engines:
        raise UserError(f"no engine could load {path}")
    best = min(figures, key=figures.get)
    entry = {"engine": best, "median_s": figures, "key": key, "probed": time.strftime("%Y-%m-%d %H:%M:%S")}
    cache[str(Path(path).resolve())] = entry
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    except OSError as exc:
        log.warning("engine auto: cannot cache the choice in %s: %s", cache_file, exc)
    log.info("engine auto: %s (probe: %s)", best, ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in figures.items()))
    return engines[best], entry
