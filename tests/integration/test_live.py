"""`edge-saliency run` end to end: CLI in a subprocess (no torch imported), recording, JSON log,
the no-display default run, SIGTERM, one-line errors, and the loop with a stamped live source."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_saliency.pipeline.capture import Capture
from edge_saliency.pipeline.frame_loop import FpsMeter, Sink
from edge_saliency.pipeline.live import live_loop
from edge_saliency.pipeline.window import LiveWindow
from edge_saliency.pipeline.render import Renderer
from edge_saliency.pipeline.sources import DemoSource, SyntheticSource, read_stamp
from waiting import PATIENCE_S, wait_for

ROOT = Path(__file__).resolve().parents[2]
# runs the CLI, then reports whether torch got imported along the way
RUNNER = ("import sys; from edge_saliency.cli import main; rc = main(sys.argv[1:]); "
          "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH'); sys.exit(rc)")


def cli(args, tmp_path, env_extra=None, timeout=PATIENCE_S):  # timeout: a guard against a hang only
    # no display, and not the CI/EDGE_SALIENCY_HEADLESS override either: the runs see a plain headless machine
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "CI", "EDGE_SALIENCY_HEADLESS")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def demo_video(path, n=24, start=0):
    src = DemoSource("demo")
    src.open()
    src.write_video(path, n, start)
    return src


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_headless_video_record_and_json_log_follow_the_object(lite0_onnx, tmp_path):
    n = 40
    start = int(DemoSource.SECONDS_PER_SCENE * 30) + 10  # the coffee scene, panning right to left
    demo = demo_video(tmp_path / "in.mp4", n, start)
    p = cli(["run", "--model", str(lite0_onnx), "--source", "in.mp4", "--headless", "--fast", "--view", "lovi",
             "--record", "out.mp4", "--log-json", "log.jsonl", "--threads", "1"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "NO_TORCH" in p.stdout
    assert "end of source" in p.stdout
    assert count_frames(tmp_path / "out.mp4") == n
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(1, n + 1))
    assert sum(r["label"] == "espresso" for r in rows) > n / 2
    xs = []
    for i, r in enumerate(rows):
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        cx, cy = r["centroid"]
        assert x0 <= cx <= x1 and y0 <= cy <= y1
        assert r["t_display"] >= r["t_capture"] and 0 < r["score"] <= 1
        xs.append(cx)
    photo_x = [demo.placement(start + i)[1] for i in range(n)]
    assert photo_x[0] - photo_x[-1] > 40  # the cup moved
    # the salient region follows the panned photo
    assert np.corrcoef(xs, photo_x)[0, 1] > 0.8
    assert np.mean(np.abs(np.array(xs) - photo_x)) < 80


def test_no_display_default_run_records_and_exits(lite0_onnx, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(lite0_onnx, home / "efficientnet_lite0.onnx")
    p = cli(["run", "--max-frames", "8"], tmp_path, {"EDGE_SALIENCY_HOME": str(home)})
    assert p.returncode == 0, p.stderr
    assert "NO_TORCH" in p.stdout and "no display" in p.stdout and "FPS" in p.stdout
    videos = list((tmp_path / "runs").glob("*/overlay.mp4"))
    sheets = list((tmp_path / "runs").glob("*/contact_sheet.png"))
    assert len(videos) == 1 and len(sheets) == 1
    assert str(videos[0].relative_to(tmp_path)) in p.stdout and str(sheets[0].relative_to(tmp_path)) in p.stdout
    assert count_frames(videos[0]) == 8
    sheet = cv2.imread(str(sheets[0]))
    assert sheet is not None and sheet.shape[1] > 640


def test_sigterm_finalises_a_playable_recording(lite0_onnx, tmp_path):
    # no display, and not the CI/EDGE_SALIENCY_HEADLESS override either: the runs see a plain headless machine
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "CI", "EDGE_SALIENCY_HEADLESS")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "run", "--model", str(lite0_onnx),
                             "--source", "synthetic", "--headless", "--record", "live.mp4", "--threads", "1",
                             "--log-json", "log.jsonl"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log.jsonl"
    try:
        # SIGTERM once a few frames went through (the JSON log is line-buffered), however long that takes
        assert wait_for(lambda: proc.poll() is not None or (log.exists() and len(log.read_text().splitlines()) >= 5)), \
            "no frames processed"
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=PATIENCE_S)  # a guard against a hang, not a speed figure
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM" in out
    written = int(out.split("recording: live.mp4 (")[1].split(" frames")[0])
    assert written >= 5 and count_frames(tmp_path / "live.mp4") == written  # the frames seen before SIGTERM, all playable


@pytest.mark.parametrize("args,words", [
    (["--model", "missing.onnx", "--source", "demo"], "model file not found"),
    (["--source", "nope.mp4"], "no such file"),
    (["--view", "xray"], "argument --view: must be one of: heatmap, recipro, fastcam, lovi, side, raw, got 'xray'"),
    (["--alpha", "2"], "argument --alpha: must be at most 1.0, got '2'"),
    (["--record", "no/such/dir/out.mp4"], "does not exist"),
    (["--record", "out.gif"], "unknown video type"),
])
def test_user_errors_are_one_line_and_non_zero(args, words, lite0_onnx, tmp_path):
    if "--model" not in args:
        args = ["--model", str(lite0_onnx), *args]
    p = cli(["run", "--headless", *args], tmp_path)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_loop_shows_the_newest_frame_of_a_live_30fps_source(lite0_model):
    src = SyntheticSource("synthetic", fps=30.0, size=(640, 480))
    src.open()
    shown = []

    class Spy(Sink):  # a sink that checks what the loop displays
        def on_frame(self, tick):
            shown.append(read_stamp(tick.image))

    renderer = Renderer(view="fastcam", alpha=0.0, scale_names=lite0_model.info.scale_names, outputs=lite0_model.outputs)
    renderer.hud = False  # keep the stamp in the top rows readable
    cap = Capture(src, realtime=True).start()
    try:
        summary = live_loop(lite0_model, cap, renderer, recorder=Spy(), max_frames=12)[0].run()
    finally:
        cap.stop()
    assert summary.frames == 12
    assert max(summary.behind_at_pickup) <= 1  # the loop always takes the newest frame
    assert shown == sorted(set(shown))  # never the same frame twice, never backwards
    assert len(shown) == 12


def test_fps_meter_measures_from_the_first_frame():
    m = FpsMeter(t_start=10.0, window=1.0)
    assert m.rate(10.05) == pytest.approx(20.0)  # the first frame took 50 ms: 20 FPS, not 0
    m.tick(10.05)
    assert m.rate(10.10) == pytest.approx(20.0)
    for k in range(2, 60):
        m.tick(10.0 + 0.05 * k)
    assert m.rate(10.0 + 0.05 * 60) == pytest.approx(20.0)  # steady 20 FPS over the last second
    assert m.rate(20.0) == pytest.approx(1 / (20.0 - (10.0 + 0.05 * 59)))  # a stall: the rate drops at once


def test_window_keys_switch_views_alpha_hud_and_quit():
    renderer = Renderer(view="fastcam")
    loop = LiveWindow(None, renderer, say=lambda m: None)
    assert loop.handle_key(ord("4"), None, 1) and renderer.view == "lovi"
    assert loop.handle_key(ord("v"), None, 1) and renderer.view == "side"
    assert loop.handle_key(ord("h"), None, 1) and renderer.hud is False
    assert loop.handle_key(ord("+"), None, 1) and renderer.alpha == pytest.approx(0.6)
    assert loop.handle_key(ord("1"), None, 1) and renderer.view == "heatmap"
    assert not loop.handle_key(ord("q"), None, 1)
    assert not loop.handle_key(27, None, 1)


def test_the_first_frame_already_shows_a_measured_fps(lite0_model):
    src = SyntheticSource("synthetic", fps=30.0, size=(320, 240))
    src.open()
    seen = []

    class Spy(Renderer):
        def render(self, frame, result, stats=None, banner=None):
            seen.append(stats.fps)
            return super().render(frame, result, stats, banner)

    renderer = Spy(view="fastcam", scale_names=lite0_model.info.scale_names, outputs=lite0_model.outputs)
    cap = Capture(src, realtime=True).start()
    try:
        live_loop(lite0_model, cap, renderer, max_frames=6)[0].run()
    finally:
        cap.stop()
    assert len(seen) == 6 and all(f > 0 for f in seen)  # never "0.0 FPS", not even on frame 1
    # and a real rate, on a clock the test controls (a loaded machine delivers frames in bursts):
    # frames every 1/30 s read 30 FPS from the second frame on, and the first reads 1 / its own time
    meter = FpsMeter(0.0)
    rates = []
    for i in range(1, 40):
        rates.append(meter.rate(i / 30))
        meter.tick(i / 30)
    assert rates[0] == pytest.approx(30.0) and all(r == pytest.approx(30.0, rel=0.04) for r in rates)
