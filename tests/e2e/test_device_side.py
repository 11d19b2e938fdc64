"""The device side on a headless machine: no window to be had, a broken native library, no torch,
no scikit-image. Every way of failing is one line, never a traceback.

The tests marked `device` need only what `pip install edge-saliency` (no extras) brings, plus
pytest and a model file: deploy/check_arm64.sh runs them inside an emulated Raspberry Pi OS root
with `-m device` and $EDGE_SALIENCY_TEST_MODEL.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opencv_builds import opencv_first

from edge_saliency.runtime import sysdeps

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ("import sys; from edge_saliency.cli import main; rc = main(sys.argv[1:]); "
          "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH'); sys.exit(rc)")
LIBXCB = "libxcb.so.1: cannot open shared object file: No such file or directory"


def cli(args, cwd, env_extra=None, drop=("DISPLAY", "WAYLAND_DISPLAY", "CI", "EDGE_SALIENCY_HEADLESS"),
        pythonpath_first=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(([str(pythonpath_first)] if pythonpath_first else []) + [str(ROOT)])})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """A short synthetic-pattern video (no scikit-image needed)."""
    from edge_saliency.pipeline.sources import SyntheticSource

    path = tmp_path_factory.mktemp("video") / "pattern.mp4"
    src = SyntheticSource("synthetic", fps=10.0, size=(320, 240))
    src.open()
    src.write_video(path, 6)
    return path


def one_error_line(p) -> str:
    err = p.stderr.strip()
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edge-saliency: error: "), lines[0]
    return lines[0]


def fake_package(root: Path, name: str, error: str, kind: str = "ImportError") -> Path:
    """A package `name` whose import fails the way a missing shared library makes it fail."""
    pkg = root / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(f"raise {kind}({error!r})\n")
    return root


# ---------------------------------------------------------------- headless runs (device)
@pytest.mark.device
def test_headless_run_on_a_video_writes_the_log_without_torch(lite0_onnx, small_video, tmp_path):
    p = cli(["run", "--model", str(lite0_onnx), "--source", str(small_video), "--headless", "--fast",
             "--max-frames", "4", "--log-json", "log.jsonl", "--threads", "1"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "NO_TORCH" in p.stdout and "Traceback" not in p.stderr
    assert "4 frames in" in p.stdout
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [1, 2, 3, 4]  # capture ids start at 1
    assert all(0.0 <= r["score"] <= 1.0 and len(r["box"]) == 4 for r in records)


@pytest.mark.device
def test_run_without_display_says_so_in_one_line_and_runs_headless(lite0_onnx, small_video, tmp_path):
    p = cli(["run", "--model", str(lite0_onnx), "--source", str(small_video), "--max-frames", "2", "--threads", "1"],
            tmp_path)
    assert p.returncode == 0, p.stderr
    said = [ln for ln in p.stdout.splitlines() if ln.startswith("no window:")]
    assert said == ["no window: no display ($DISPLAY and $WAYLAND_DISPLAY are unset): running headless for "
                    "2 frames, recording the overlay"], p.stdout
    assert "2 frames in" in p.stdout and "Traceback" not in p.stderr
    assert list(tmp_path.glob("runs/*/overlay.mp4")), "the headless fallback records the overlay"


@pytest.mark.device
def test_run_with_a_display_nobody_answers_falls_back(lite0_onnx, small_video, tmp_path):
    free = next(n for n in range(93, 200) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    p = cli(["run", "--model", str(lite0_onnx), "--source", str(small_video), "--max-frames", "1", "--threads", "1"],
            tmp_path, env_extra={"DISPLAY": f":{free}"})
    assert p.returncode == 0, p.stderr
    assert f"no window: no display server answers at $DISPLAY=:{free}: running headless" in p.stdout
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------- broken native libraries (device)
@pytest.mark.device
@pytest.mark.parametrize("args", [
    ["run", "--headless", "--source", "synthetic", "--max-frames", "1"],
    ["serve", "--source", "synthetic"],
    ["bench", "--runs", "10"],
    ["explain", "--help"],
])
def test_gui_opencv_without_x_libraries_is_one_line(args, tmp_path):
    """opencv-python (the GUI build) on a Lite image: `import cv2` fails on libxcb."""
    fakes = fake_package(tmp_path / "fakes", "cv2", LIBXCB)
    p = cli(args, tmp_path, pythonpath_first=fakes)
    assert p.returncode != 0
    line = one_error_line(p)
    assert "OpenCV cannot load libxcb.so.1" in line and "opencv-python-headless" in line, line


@pytest.mark.device
def test_help_still_works_when_cv2_cannot_load(tmp_path):
    fakes = fake_package(tmp_path / "fakes", "cv2", LIBXCB)
    p = cli(["--help"], tmp_path, pythonpath_first=fakes)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "unavailable here: OpenCV cannot load libxcb.so.1" in " ".join(p.stdout.split())


@pytest.mark.device
@pytest.mark.parametrize("kind", ["ImportError", "OSError"])
def test_onnxruntime_missing_a_system_library_is_one_line(kind, lite0_onnx, tmp_path):
    fakes = fake_package(tmp_path / "fakes", "onnxruntime",
                         "libgomp.so.1: cannot open shared object file: No such file or directory", kind)
    p = cli(["run", "--model", str(lite0_onnx), "--headless", "--source", "synthetic", "--max-frames", "1"],
            tmp_path, pythonpath_first=fakes)
    assert p.returncode == 1
    line = one_error_line(p)
    assert "ONNX Runtime cannot load the system library libgomp.so.1" in line, line


# ---------------------------------------------------------------- the logic, in process
def test_import_error_lines():
    e = ModuleNotFoundError("No module named 'cv2'", name="cv2")
    assert sysdeps.import_error_line(e) == "OpenCV is not installed: pip install opencv-python-headless"
    e = ImportError(LIBXCB)
    line = sysdeps.import_error_line(e, "cv2")
    assert line.startswith("OpenCV cannot load libxcb.so.1: this is the GUI build of OpenCV")
    assert "pip uninstall -y opencv-python && pip install --force-reinstall opencv-python-headless" in line
    e = OSError("libcudnn.so.9: cannot open shared object file: No such file or directory")
    assert sysdeps.import_error_line(e, "onnxruntime").startswith(
        "ONNX Runtime cannot load the system library libcudnn.so.9 (")
    assert sysdeps.missing_library(OSError("no library here")) is None
    assert sysdeps.import_error_line(ImportError("something odd"), "openvino") == \
        "OpenVINO failed to import: something odd"


def test_gui_backend_from_build_information():
    assert sysdeps.gui_backend("  GUI:                           NONE\n") is None
    assert sysdeps.gui_backend("  GUI:                           QT5\n    QT:  YES (ver 5.15)\n") == "QT5"
    assert sysdeps.gui_backend("  GUI:  GTK3\n") == "GTK3"
    assert sysdeps.gui_backend("  GUI: \n    GTK+:                        YES (ver 3.24)\n") == "GTK+"  # 4.x, older
    assert sysdeps.gui_backend("  Video I/O:\n    FFMPEG: YES\n") is None


def test_window_unavailable_reasons(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("EDGE_SALIENCY_HEADLESS", raising=False)
    assert sysdeps.window_unavailable("GUI: QT5") == "no window: no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    monkeypatch.setenv("EDGE_SALIENCY_HEADLESS", "1")
    assert "forced" in sysdeps.window_unavailable("GUI: QT5")
    monkeypatch.delenv("EDGE_SALIENCY_HEADLESS")
    monkeypatch.setenv("DISPLAY", "127.0.0.1:97")  # TCP port 6097: nothing listens there
    assert sysdeps.window_unavailable("GUI: QT5") == "no window: no display server answers at $DISPLAY=127.0.0.1:97"


# ---------------------------------------------------------------- with a real X server and a real headless OpenCV
@pytest.fixture(scope="module")
def xvfb():
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    number = next(n for n in range(90, 200) if not os.path.exists(f"/tmp/.X11-unix/X{n}")
                  and not os.path.exists(f"/tmp/.X{n}-lock"))
    proc = subprocess.Popen([exe, f":{number}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.1)
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def headless_cv2(tmp_path_factory):
    """A folder that puts the real opencv-python-headless (same version as this cv2) first on the path
    (None: this cv2 is the headless build already)."""
    if sysdeps.gui_backend() is None:
        return None
    return opencv_first("headless", tmp_path_factory.mktemp("pip") / "cv2")


@pytest.fixture(scope="module")
def gui_cv2(tmp_path_factory):
    """The same for OpenCV's GUI build (None: this cv2 has a GUI backend already)."""
    if sysdeps.gui_backend() is not None:
        return None
    return opencv_first("gui", tmp_path_factory.mktemp("pip") / "cv2")


def test_window_available_with_a_display_and_a_gui_opencv(xvfb, gui_cv2, tmp_path):
    """With a display and OpenCV's GUI build, run would open its window (nothing stands in its way)."""
    code = "from edge_saliency.runtime.sysdeps import window_unavailable; print('unavailable:', window_unavailable())"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "EDGE_SALIENCY_HEADLESS", "WAYLAND_DISPLAY")}
    env.update({"DISPLAY": xvfb, "PYTHONPATH": os.pathsep.join([str(gui_cv2)] * bool(gui_cv2) + [str(ROOT)])})
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "unavailable: None", (p.stdout, p.stderr)


def test_headless_opencv_with_a_display_says_so_and_runs_headless(xvfb, headless_cv2, lite0_onnx, small_video,
                                                                   tmp_path):
    p = cli(["run", "--model", str(lite0_onnx), "--source", str(small_video), "--max-frames", "2", "--threads", "1"],
            tmp_path, env_extra={"DISPLAY": xvfb}, pythonpath_first=headless_cv2)
    assert p.returncode == 0, p.stderr
    said = [ln for ln in p.stdout.splitlines() if ln.startswith("no window:")]
    assert len(said) == 1 and "this OpenCV has no GUI backend (the headless build)" in said[0], p.stdout
    assert "pip install --force-reinstall --no-deps opencv-python==" in said[0]
    assert said[0].endswith("running headless for 2 frames, recording the overlay")
    assert "2 frames in" in p.stdout and "Traceback" not in p.stderr


# ---------------------------------------------------------------- serve on a slow device (device)
FINISH = """
import logging, sys, threading, time
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from edge_saliency.serve.daemon import finish_inference
t = threading.Thread(target=time.sleep, args=(float(sys.argv[1]),), name="camera-loop", daemon=True)
t.start()
done = finish_inference(limit=float(sys.argv[2]))
print("RETURNED", done, flush=True)
"""


@pytest.mark.device
def test_stop_waits_for_the_frame_in_session_run():
    """A frame still in session.run after stop (seconds per frame on a Pi Zero or under emulation):
    waited for, so the interpreter does not tear the session down under it (ORT would abort)."""
    p = subprocess.run([sys.executable, "-c", FINISH, "0.6", "5"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and "RETURNED True" in p.stdout, p.stderr
    assert "waiting for the inference in progress to finish (camera-loop)" in p.stderr


@pytest.mark.device
def test_stop_leaves_cleanly_when_inference_outlasts_the_limit():
    p = subprocess.run([sys.executable, "-c", FINISH, "30", "0.3"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert "RETURNED" not in p.stdout  # left with os._exit(0): no teardown under a running session
    assert "inference still running after 0 s (camera-loop): exiting without tearing the session down" in p.stderr


def test_openvino_that_cannot_load_its_libraries_is_not_an_engine_here(tmp_path, monkeypatch, lite0_onnx):
    from edge_saliency.runtime import engines
    from edge_saliency.errors import UserError
    from edge_saliency.runtime.model import SaliencyModel

    fakes = fake_package(tmp_path / "fakes", "openvino", "libtbb.so.12: cannot open shared object file", "OSError")
    monkeypatch.syspath_prepend(str(fakes))
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    assert engines.available_engines() == ["onnxruntime"]  # `--engine auto` goes on with onnxruntime
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    with pytest.raises(UserError, match="the openvino engine cannot load: OpenVINO cannot load the system library "
                                        "libtbb.so.12"):
        SaliencyModel(lite0_onnx, engine="openvino")
