"""Engines: OpenVINO runs the same file as ONNX Runtime with the same results; auto probes once."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_saliency.runtime import engines
from edge_saliency import samples
from edge_saliency.errors import UserError
from edge_saliency.runtime.model import SaliencyModel

# per test, not for the module: the tests of what happens WITHOUT OpenVINO run either way
needs_openvino = pytest.mark.skipif("openvino" not in engines.available_engines(),
                                    reason="OpenVINO is not installed (pip install 'edge-saliency[openvino]')")
ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "the openvino engine is not installed: pip install 'edge-saliency[openvino]'"

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


@pytest.fixture(scope="module")
def both(lite0_onnx):
    return (SaliencyModel(lite0_onnx, provider="cpu", threads=1, engine="onnxruntime"),
            SaliencyModel(lite0_onnx, threads=1, engine="openvino"))


@needs_openvino
def test_openvino_reads_the_contract_from_the_same_file(both):
    ort_model, ov_model = both
    assert ov_model.engine_name == "openvino" and ov_model.provider == "openvino-cpu"
    assert ov_model.info.labels == ort_model.info.labels
    assert ov_model.info.input_size == (224, 224)
    assert ov_model.outputs == ort_model.outputs


@needs_openvino
@pytest.mark.parametrize("photo", PHOTOS)
def test_openvino_matches_onnxruntime(both, photo):
    ort_model, ov_model = both
    frame = samples.photo(photo)
    a, b = ort_model.predict(frame), ov_model.predict(frame)
    assert a.class_index == b.class_index
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-3)
    for name in ("smoe", "smoe_scales", "recipro_cam"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-3, err_msg=name)


@needs_openvino
def test_openvino_dynamic_batch(both):
    _, ov_model = both
    frames = [samples.photo(p) for p in PHOTOS[:3]]
    batch = ov_model.predict_batch(frames)
    assert [r.label for r in batch][:2] == ["Egyptian cat", "espresso"]
    np.testing.assert_allclose(batch[1].smoe, ov_model.predict(frames[1]).smoe, atol=1e-4)


@needs_openvino
def test_auto_probes_once_then_uses_the_cache(lite0_onnx, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EDGE_SALIENCY_HOME", str(tmp_path / "home"))
    caplog.set_level(logging.INFO, logger="edge_saliency")
    first = SaliencyModel(lite0_onnx, threads=1, engine="auto")
    cache = json.loads((tmp_path / "home" / "engine_choice.json").read_text())
    (entry,) = cache.values()
    assert set(entry["median_s"]) == {"onnxruntime", "openvino"}
    assert entry["engine"] == min(entry["median_s"], key=entry["median_s"].get) == first.engine_name
    assert "engine auto" in caplog.text and "(probe:" in caplog.text

    def no_probe(*a, **k):
        raise AssertionError("probed again although the cache is valid")

    monkeypatch.setattr(engines, "probe", no_probe)
    caplog.clear()
    second = SaliencyModel(lite0_onnx, threads=1, engine="auto")
    assert second.engine_name == first.engine_name and "(cached probe:" in caplog.text


@needs_openvino
def test_auto_probes_again_when_the_model_changes(lite0_onnx, lite0_class_input_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SALIENCY_HOME", str(tmp_path / "home"))
    path = tmp_path / "m.onnx"
    shutil.copy(lite0_onnx, path)
    SaliencyModel(path, threads=1, engine="auto")
    shutil.copy(lite0_class_input_onnx, path)  # same path, other model
    probed = []
    real_probe = engines.probe
    monkeypatch.setattr(engines, "probe", lambda e, f, runs=engines.PROBE_RUNS: probed.append(e.name) or real_probe(e, f, 3))
    SaliencyModel(path, threads=1, engine="auto")
    assert sorted(probed) == ["onnxruntime", "openvino"]


def test_unknown_engine(lite0_onnx):
    with pytest.raises(UserError, match="unknown engine 'tensorflow'"):
        SaliencyModel(lite0_onnx, engine="tensorflow")


def test_openvino_missing_says_how_to_install(lite0_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"^the openvino engine is not installed: pip install 'edge-saliency\[openvino\]'$"):
        SaliencyModel(lite0_onnx, engine="openvino")
    assert engines.available_engines() == ["onnxruntime"]


def run_without_openvino(args, tmp_path):
    """The real CLI in a fresh interpreter where `import openvino` fails as on a machine without it
    (a sitecustomize puts None in sys.modules['openvino']), whether or not it is installed here."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "EDGE_SALIENCY_HOME": str(tmp_path / "home")}
    env.pop("EDGE_SALIENCY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edge_saliency", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)


def test_run_with_openvino_missing_is_the_install_hint_in_one_line(lite0_onnx, tmp_path):
    p = run_without_openvino(["run", "--model", str(lite0_onnx), "--engine", "openvino", "--source", "synthetic",
                              "--headless", "--max-frames", "2", "--threads", "1"], tmp_path)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert lines == [f"edge-saliency: error: {INSTALL_HINT}"], p.stderr


def test_auto_without_openvino_runs_on_onnxruntime(lite0_onnx, tmp_path):
    p = run_without_openvino(["run", "--model", str(lite0_onnx), "--engine", "auto", "--source", "synthetic",
                              "--headless", "--fast", "--max-frames", "3", "--threads", "1",
                              "--log-json", "log.jsonl"], tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "engine auto: onnxruntime (probe: onnxruntime " in out and "chosen by auto: onnxruntime " in out, out
    assert "openvino" not in out, out  # probed alone: no warning about an engine it cannot have
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3


@needs_openvino
def test_openvino_unknown_device(lite0_onnx):
    with pytest.raises(UserError, match="OpenVINO device NPU is not present"):
        SaliencyModel(lite0_onnx, engine="openvino", provider="npu")


@needs_openvino
@pytest.mark.parametrize("engine, expect", [("openvino", "on openvino-cpu (openvino)"), ("auto", "chosen by auto:")])
def test_run_command_with_engine(lite0_onnx, tmp_path, engine, expect):
    import subprocess

    env = {**__import__("os").environ, "EDGE_SALIENCY_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "edge_saliency", "run", "--model", str(lite0_onnx), "--engine", engine,
                          "--source", "synthetic", "--headless", "--fast", "--max-frames", "5", "--threads", "1",
                          "--log-json", str(tmp_path / "log.jsonl")], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout + out.stderr
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 5


def test_ort_spinning_is_off_unless_asked_for(lite0_onnx):
    """Camera-rate loops must not busy-wait between frames (benchmarks/results/ort_spinning.md)."""
    from edge_saliency.runtime.model import SaliencyModel

    key = "session.intra_op.allow_spinning"
    off = SaliencyModel(lite0_onnx, provider="cpu", threads=1)
    on = SaliencyModel(lite0_onnx, provider="cpu", threads=1, spinning=True)
    assert off.engine.session.get_session_options().get_session_config_entry(key) == "0"
    assert on.engine.session.get_session_options().get_session_config_entry(key) == "1"
