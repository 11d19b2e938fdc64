"""CUDA / TensorRT: the provider chain, the option dicts handed to ONNX Runtime, the engine cache,
and the fallback check against what ORT reports back. The logic runs everywhere (ORT's answers are
simulated where there is no GPU); the tests marked `gpu` need onnxruntime-gpu and an NVIDIA GPU
(benchmarks/gpu_check.sh) and skip cleanly without them."""
from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge_saliency.runtime import providers
from edge_saliency.errors import UserError

TRT, CUDA, CPU = providers.TENSORRT, providers.CUDA, providers.CPU
ALL_GPU = [TRT, CUDA, CPU]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_cache_env(monkeypatch, tmp_path):
    for var in ("EDGE_SALIENCY_TRT_CACHE", "CACHE_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EDGE_SALIENCY_HOME", str(tmp_path / "home"))
    return tmp_path


# ---------------------------------------------------------------- the chain
def test_auto_never_picks_tensorrt():
    assert providers.resolve("auto", ALL_GPU) == [CUDA, CPU]
    assert providers.resolve(None, [TRT, CPU]) == [CPU]
    assert providers.resolve("auto", [CPU]) == [CPU]


def test_named_chains():
    assert providers.resolve("tensorrt", ALL_GPU) == [TRT, CUDA, CPU]  # TensorRT leaves the rest to CUDA
    assert providers.resolve("trt", [TRT, CPU]) == [TRT, CPU]
    assert providers.resolve("tensorrt,cpu", ALL_GPU) == [TRT, CPU]  # an explicit order is kept
    assert providers.resolve("cuda", ALL_GPU) == [CUDA, CPU]
    assert providers.resolve("cpu", ALL_GPU) == [CPU]
    assert providers.resolve("cuda, tensorrt", ALL_GPU) == [CUDA, TRT, CPU]


def test_chain_errors():
    with pytest.raises(UserError, match="unknown provider 'tpu'"):
        providers.resolve("tpu", ALL_GPU)
    with pytest.raises(UserError, match=r"provider cuda is not available .* install onnxruntime-gpu"):
        providers.resolve("cuda", [CPU])


# ---------------------------------------------------------------- the option dicts
def test_tensorrt_options(clean_cache_env, monkeypatch, tmp_path):
    model = tmp_path / "lite0 fp16.onnx"
    model.write_bytes(b"model bytes")
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/edge-saliency")  # what systemd's CacheDirectory= sets
    gpu = providers.GpuOptions(device_id=1, trt_fp16=True, trt_workspace_mb=512)
    opts = providers.provider_options(TRT, gpu, str(model))
    prefix = opts.pop("trt_engine_cache_prefix")
    assert opts == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_max_workspace_size": str(512 * 1024 * 1024),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/var/cache/edge-saliency/tensorrt",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": "/var/cache/edge-saliency/tensorrt",
    }
    assert prefix.startswith("lite0_fp16_") and len(prefix) == len("lite0_fp16_") + 12
    model.write_bytes(b"other model bytes")  # a new model file: a new prefix, no stale engine
    assert providers.engine_prefix(model) != prefix
    assert providers.provider_options(TRT, providers.GpuOptions(), str(model))["trt_fp16_enable"] == "False"


def test_cuda_and_cpu_options():
    assert providers.provider_options(CUDA, providers.GpuOptions(device_id=2)) == {
        "device_id": "2", "arena_extend_strategy": "kSameAsRequested"}
    limited = providers.provider_options(CUDA, providers.GpuOptions(cuda_mem_limit_mb=256))
    assert limited["gpu_mem_limit"] == str(256 << 20)
    assert providers.provider_options(CPU) == {}
    chain = providers.session_providers([CUDA, CPU], providers.GpuOptions())
    assert [name for name, _ in chain] == [CUDA, CPU] and chain[1][1] == {}


def test_cache_folder_precedence(clean_cache_env, monkeypatch):
    home = clean_cache_env / "home"
    assert providers.GpuOptions().cache_folder() == home / "tensorrt"
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/edge-saliency:/var/cache/other")
    assert providers.GpuOptions().cache_folder() == Path("/var/cache/edge-saliency/tensorrt")
    assert providers.GpuOptions(trt_cache="/data/trt").cache_folder() == Path("/data/trt")
    monkeypatch.setenv("EDGE_SALIENCY_TRT_CACHE", "/srv/trt")
    assert providers.GpuOptions(trt_cache="/data/trt").cache_folder() == Path("/srv/trt")


def test_the_unit_gives_the_cache_a_writable_home():
    unit = (ROOT / "deploy" / "edge-saliency.service").read_text()
    assert "\nCacheDirectory=edge-saliency\n" in unit and "ProtectSystem=strict" in unit


# ---------------------------------------------------------------- what ORT reports back
def test_fallback_detection():
    assert providers.fallback([CUDA, CPU], [CUDA, CPU]) is None
    assert providers.fallback([TRT, CUDA, CPU], [TRT, CUDA, CPU]) is None
    assert providers.fallback([TRT, CUDA, CPU], [CUDA, CPU]) == \
        "asked for tensorrt, ONNX Runtime runs on cuda (fell back)"
    silent = providers.fallback([TRT, CUDA, CPU], [CPU])
    assert silent.startswith("asked for tensorrt, cuda, ONNX Runtime runs on cpu (silent CPU fallback: ")
    assert providers.fallback([CUDA, CPU], [CPU]).startswith("asked for cuda, ONNX Runtime runs on cpu (silent")
    assert providers.fallback([CPU], [CPU]) is None


class FakeGpuOrt:
    """onnxruntime as a GPU build reports itself where the GPU libraries then fail to load: TensorRT
    and CUDA listed as available, the session silently on the CPU. Sessions are real (CPU)."""

    def __init__(self, real, build_seconds=0.0):
        self.real, self.build_seconds = real, build_seconds
        self.SessionOptions = real.SessionOptions
        self.GraphOptimizationLevel = real.GraphOptimizationLevel
        self.asked = []

    def get_available_providers(self):
        return [TRT, CUDA, CPU]

    def InferenceSession(self, path, opts, providers):
        self.asked.append(providers)
        time.sleep(self.build_seconds)
        return self.real.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def test_engine_hands_ort_the_options_and_logs_a_silent_cpu_fallback(lite0_onnx, clean_cache_env, monkeypatch,
                                                                     caplog):
    import onnxruntime

    from edge_saliency.runtime.engines import OnnxRuntimeEngine

    fake = FakeGpuOrt(onnxruntime)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", fake)
    folder = clean_cache_env / "trt"
    with caplog.at_level(logging.INFO, logger="edge_saliency"):
        eng = OnnxRuntimeEngine(str(lite0_onnx), "tensorrt", threads=1,
                                gpu=providers.GpuOptions(trt_cache=str(folder), trt_fp16=True))
    assert fake.asked[0] == [CPU]  # the input shapes, read first (for TensorRT's profile)
    names = [name for name, _ in fake.asked[-1]]
    assert names == [TRT, CUDA, CPU]
    trt_opts = dict(fake.asked[-1][0][1])
    assert trt_opts["trt_engine_cache_path"] == trt_opts["trt_timing_cache_path"] == str(folder)
    assert trt_opts["trt_fp16_enable"] == "True" and folder.is_dir()
    assert trt_opts["trt_profile_min_shapes"] == "image:1x224x224x3"  # the model's input, batch 1..8
    assert trt_opts["trt_profile_max_shapes"] == "image:8x224x224x3"
    assert eng.providers == [CPU] and eng.device == "cpu"
    assert eng.fallback and "silent CPU fallback" in eng.fallback
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("asked for tensorrt, cuda, ONNX Runtime runs on cpu (silent CPU fallback" in w for w in warnings)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith(f"building the TensorRT engine for {lite0_onnx.name}") and str(folder) in m for m in infos)


def test_no_build_notice_when_the_engine_is_cached(lite0_onnx, clean_cache_env, monkeypatch, caplog):
    import onnxruntime

    from edge_saliency.runtime.engines import OnnxRuntimeEngine

    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", FakeGpuOrt(onnxruntime))
    folder = clean_cache_env / "trt"
    folder.mkdir()
    (folder / f"{providers.engine_prefix(lite0_onnx)}_2068723788287043730_0_0_sm87.engine").write_bytes(b"plan")
    with caplog.at_level(logging.INFO, logger="edge_saliency"):
        OnnxRuntimeEngine(str(lite0_onnx), "tensorrt", threads=1, gpu=providers.GpuOptions(trt_cache=str(folder)))
    assert not any("building the TensorRT engine" in r.getMessage() for r in caplog.records)


def test_build_notice_ticks_while_the_build_lasts():
    said = []
    with providers.BuildNotice(said.append, "m.onnx", Path("/cache"), every=0.05):
        time.sleep(0.3)
    assert said[0].startswith("building the TensorRT engine for m.onnx") and "/cache" in said[0]
    assert sum(s.startswith("still building the TensorRT engine") for s in said) >= 2
    assert said[-1].startswith("TensorRT engine ready in")


def test_unwritable_cache_folder_is_one_clear_error(lite0_onnx, clean_cache_env, monkeypatch):
    import onnxruntime

    from edge_saliency.runtime.engines import OnnxRuntimeEngine

    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", FakeGpuOrt(onnxruntime))
    blocker = clean_cache_env / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create the TensorRT cache folder .* set trt_cache"):
        OnnxRuntimeEngine(str(lite0_onnx), "tensorrt", gpu=providers.GpuOptions(trt_cache=str(blocker / "trt")))


def test_serve_config_carries_the_gpu_settings(tmp_path):
    from edge_saliency.serve.config import load_config

    conf = tmp_path / "c.toml"
    conf.write_text('provider = "tensorrt"\ntrt_fp16 = true\ntrt_workspace_mb = 256\ntrt_cache = "/x/trt"\n')
    cfg = load_config(conf)
    assert (cfg.provider, cfg.trt_fp16, cfg.trt_workspace_mb, cfg.trt_cache, cfg.gpu_device) == \
        ("tensorrt", True, 256, "/x/trt", 0)
    bad = tmp_path / "bad.toml"
    bad.write_text("trt_workspace_mb = 1\n")
    with pytest.raises(UserError, match="trt_workspace_mb"):
        load_config(bad)


# ---------------------------------------------------------------- bench rows
def test_bench_rows_for_gpu_providers_this_ort_lacks():
    import argparse

    from edge_saliency.bench import runner as bench

    args = argparse.Namespace(provider="cpu,cuda,tensorrt", threads="2", precision="fp32", plain=False,
                              engine="onnxruntime")
    variants, _ = bench.plan(args, [CPU], can_make=True)
    assert [(v.name, v.status.split(":")[0]) for v in variants] == [
        ("cpu/2t/fp32/saliency", "ok"), ("cuda/2t/fp32/saliency", "unavailable"),
        ("tensorrt/2t/fp32/saliency", "unavailable")]
    assert "install onnxruntime-gpu" in variants[1].status
    rows = bench.summarise(variants)
    assert "cuda/2t/fp32/saliency" in bench.table(rows) and "unavailable" in bench.table(rows)
    args.provider, args.precision = "cuda,tensorrt", None  # GPU rows get fp16 too
    variants, _ = bench.plan(args, [TRT, CUDA, CPU], can_make=True)
    assert [v.name for v in variants] == ["cuda/2t/fp32/saliency", "cuda/2t/fp16/saliency",
                                          "cuda/2t/int8/saliency", "tensorrt/2t/fp32/saliency",
                                          "tensorrt/2t/fp16/saliency", "tensorrt/2t/int8/saliency"]


# ---------------------------------------------------------------- on a GPU (benchmarks/gpu_check.sh)
def _gpu_providers():
    import onnxruntime as ort

    have = ort.get_available_providers()
    if CUDA not in have:
        pytest.skip(f"no CUDA provider in this onnxruntime ({', '.join(have)}): install onnxruntime-gpu")
    try:
        subprocess.run(["nvidia-smi", "-L"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no NVIDIA GPU visible (nvidia-smi -L failed)")
    return have


@pytest.mark.gpu
def test_cuda_session_runs_on_the_gpu_and_matches_the_cpu(lite0_onnx):
    _gpu_providers()
    from edge_saliency.runtime.model import SaliencyModel

    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    gpu = SaliencyModel(lite0_onnx, provider="cuda")
    assert gpu.providers[0] == CUDA and gpu.engine.fallback is None
    cpu = SaliencyModel(lite0_onnx, provider="cpu", threads=2)
    a, b = gpu.predict(frame), cpu.predict(frame)
    assert a.class_index == b.class_index
    np.testing.assert_allclose(a.logits, b.logits, atol=2e-2)
    np.testing.assert_allclose(a.smoe, b.smoe, atol=2e-2)


@pytest.mark.gpu
def test_tensorrt_builds_once_then_loads_from_the_cache(lite0_onnx, tmp_path, caplog):
    have = _gpu_providers()
    if TRT not in have:
        pytest.skip("no TensorRT provider in this onnxruntime")
    from edge_saliency.runtime.model import SaliencyModel

    folder = tmp_path / "trt"
    gpu = providers.GpuOptions(trt_cache=str(folder), trt_fp16=True, trt_workspace_mb=1024)
    with caplog.at_level(logging.INFO, logger="edge_saliency"):
        first = SaliencyModel(lite0_onnx, provider="tensorrt", gpu=gpu)
    if first.providers[0] != TRT:
        pytest.skip(f"TensorRT did not load here ({first.engine.fallback})")
    assert any("building the TensorRT engine" in r.getMessage() for r in caplog.records)
    frame = np.zeros((224, 224, 3), np.uint8)
    first.predict(frame)
    engines_made = providers.cached_engines(folder, providers.engine_prefix(lite0_onnx))
    assert engines_made, sorted(p.name for p in folder.iterdir())
    assert list(folder.glob("*timing*")), "the timing cache is written next to the engines"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_saliency"):
        second = SaliencyModel(lite0_onnx, provider="tensorrt", gpu=gpu)
    assert not any("building the TensorRT engine" in r.getMessage() for r in caplog.records)
    assert second.providers[0] == TRT
    r1, r2 = first.predict(frame), second.predict(frame)
    assert r1.class_index == r2.class_index
    assert second.load_seconds < first.load_seconds


def test_tensorrt_profile_covers_batches_up_to_the_maximum(clean_cache_env, tmp_path):
    inputs = [("image", ["N", 224, 224, 3]), ("class_index", ["N"])]
    assert providers.profile_shapes(inputs, 8) == {
        "trt_profile_min_shapes": "image:1x224x224x3,class_index:1",
        "trt_profile_opt_shapes": "image:1x224x224x3,class_index:1",
        "trt_profile_max_shapes": "image:8x224x224x3,class_index:8"}
    assert providers.profile_shapes([("image", ["N", "H", "W", 3])], 8) is None  # free sides: TensorRT decides
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    opts = providers.provider_options(TRT, providers.GpuOptions(trt_max_batch=4), str(model), inputs[:1])
    assert opts["trt_profile_max_shapes"] == "image:4x224x224x3"
    assert "trt_profile_min_shapes" not in providers.provider_options(TRT, providers.GpuOptions(), str(model))
