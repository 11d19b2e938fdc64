"""Several cameras in one daemon ([cameras.NAME]): one shared model, a capture and an inference
thread each, per-camera URLs and metric labels, and one camera dying (or never opening) while the
others go on; the single-camera URLs stay the default camera's."""
from __future__ import annotations

import json
import threading

import pytest

from serve_util import (MjpegReader, RecordingNotifier, Switchable, decode_jpeg, get_json, metric_value, request,
                        running, start_daemon, wait_for)


def seq(d, name):
    snap = d.cameras[name].loop.latest
    return snap.seq if snap is not None else 0


def test_two_cameras_one_dies_the_other_goes_on(lite0_model):
    from edge_saliency.pipeline.sources import SyntheticSource

    plug = threading.Event()
    plug.set()
    door = Switchable(fps=30.0, size=(320, 240), plug=plug)
    door.open()
    yard = SyntheticSource("synthetic", fps=30.0, size=(640, 480))
    yard.open()
    notifier = RecordingNotifier(watchdog_usec=200_000)
    cameras = {"door": {"source": "synthetic", "view": "heatmap"}, "yard": {"source": "synthetic", "rate": 50}}
    d = start_daemon(lite0_model, tables={"cameras": cameras}, sources={"door": door, "yard": yard},
                     notifier=notifier)
    try:
        assert list(d.cameras) == ["door", "yard"] and d.default_camera.name == "door"
        assert d.cameras["door"].loop.model is d.cameras["yard"].loop.model is lite0_model  # one session
        assert wait_for(lambda: seq(d, "door") >= 3 and seq(d, "yard") >= 3, 60)
        status, body = get_json(d, "/api/cameras")
        assert status == 200 and body["default"] == "door"
        assert [c["name"] for c in body["cameras"]] == ["door", "yard"]
        assert all(c["healthy"] for c in body["cameras"]), body
        assert body["cameras"][1]["stream"] == "/cameras/yard/stream.mjpg"
        # per-camera results and streams; the plain URLs are the default camera's
        status, a = get_json(d, "/api/cameras/yard/latest")
        assert status == 200 and a["camera"] == "yard" and a["box"][2] <= 640
        status, a = get_json(d, "/api/latest")
        assert status == 200 and a["camera"] == "door" and a["box"][2] <= 320
        status, h, body = request(d, "GET", "/api/cameras/yard/frame.jpg")
        assert status == 200 and decode_jpeg(body).shape == (480, 640, 3)
        status, h, body = request(d, "GET", "/api/cameras/door/map.png")
        assert status == 200 and h["content-type"] == "image/png"
        s = MjpegReader(d, "/cameras/yard/stream.mjpg?view=raw")
        try:
            ids = [int(s.part()[0]["x-frame-id"]) for _ in range(3)]
            assert ids == sorted(set(ids))
            assert d.cameras["yard"].streams.viewers == 1 and d.cameras["door"].streams.viewers == 0
        finally:
            s.close()
        s = MjpegReader(d, "/stream.mjpg")
        try:
            headers, data = s.part()
            assert decode_jpeg(data).shape == (240, 320, 3)  # door, in its own view
            assert "heatmap" in d.cameras["door"].streams._encoders
        finally:
            s.close()
        page = request(d, "GET", "/cameras/yard/")[2].decode()
        assert 'src="/cameras/yard/stream.mjpg?view=fastcam"' in page and '"/api/cameras/yard/latest"' in page
        assert '<a href="/cameras/door/">door</a>' in page and 'href="/cameras/yard/" class=on' in page
        page = request(d, "GET", "/")[2].decode()
        assert 'src="stream.mjpg?view=heatmap"' in page and 'href="/cameras/door/" class=on' in page
        status, _, body = request(d, "POST", "/api/explain", json.dumps({"method": "fastcam", "camera": "yard"}),
                                  {"Content-Type": "application/json"})
        assert status == 202
        job = json.loads(body)["url"]
        done = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(get_json(d, job)[1]), 60)
        assert done["state"] == "done"
        kept = d.jobs.get(done["id"])
        assert kept.frame_shape == (480, 640)  # yard's frame, not door's 320x240
        assert kept.snapshot is None  # a finished job lets its frame go (issue-16)
        status, _, body = request(d, "POST", "/api/explain", json.dumps({"camera": "attic"}),
                                  {"Content-Type": "application/json"})
        assert status == 400 and b"no camera named 'attic'" in body
        for path in ("/cameras/attic/stream.mjpg", "/api/cameras/attic/latest", "/api/cameras/../latest"):
            assert request(d, "GET", path)[0] == 404, path

        # unplug the door camera: it turns unhealthy and reconnects; yard goes on undisturbed
        plug.clear()
        assert wait_for(lambda: not d.cameras["door"].loop.health()[0], 15)
        y0 = seq(d, "yard")
        n0 = len(notifier.messages)
        assert wait_for(lambda: seq(d, "yard") >= y0 + 10, 30), "the other camera stalled"
        status, body = get_json(d, "/healthz")
        assert status == 503 and "camera door" in body["reason"] and "yard" not in body["reason"]
        assert body["cameras"]["yard"]["ok"] and not body["cameras"]["door"]["ok"]
        assert "WATCHDOG=1" in notifier.messages[n0:]  # one dead camera does not get the daemon restarted
        assert get_json(d, "/api/cameras/yard/latest")[0] == 200
        text = request(d, "GET", "/metrics")[2].decode()
        assert metric_value(text, "edge_saliency_camera_healthy", {"camera": "door"}) == 0
        assert metric_value(text, "edge_saliency_camera_healthy", {"camera": "yard"}) == 1
        assert metric_value(text, "edge_saliency_camera_faults_total", {"camera": "door"}) >= 1
        assert metric_value(text, "edge_saliency_camera_faults_total", {"camera": "yard"}) == 0
        assert metric_value(text, "edge_saliency_frames_processed_total", {"camera": "yard"}) >= y0 + 10
        assert metric_value(text, "edge_saliency_healthy") == 0
        # plugged back in: it recovers
        plug.set()
        assert wait_for(lambda: d.cameras["door"].loop.health()[0], 30)
        assert wait_for(lambda: get_json(d, "/healthz")[0] == 200, 10)
    finally:
        d.stop()


def test_the_watchdog_needs_every_cameras_inference_loop_not_only_one(lite0_model, caplog):
    """Merged rule (issue-15 x issue-16): a camera that is gone does not stop the watchdog (above), but
    one camera's inference loop that hangs does, even while the other camera and HTTP are fine."""
    import logging
    import time

    caplog.set_level(logging.INFO, logger="edge_saliency")

    class HangsForOneCamera:
        """The real model; predict() blocks in camera b's inference thread once `hang` is set."""

        def __init__(self, model):
            self.model, self.thread = model, None
            self.hang, self.release = threading.Event(), threading.Event()

        def __getattr__(self, name):
            return getattr(self.model, name)

        def predict(self, *a, **kw):
            if self.hang.is_set() and threading.current_thread() is self.thread:
                self.release.wait(30)
            return self.model.predict(*a, **kw)

    model = HangsForOneCamera(lite0_model)
    notifier = RecordingNotifier(watchdog_usec=400_000)
    cams = {"a": {"source": "synthetic"}, "b": {"source": "synthetic"}}
    with running(model, tables={"cameras": cams}, notifier=notifier) as d:
        model.thread = d.cameras["b"].loop._thread
        assert wait_for(lambda: seq(d, "a") >= 3 and seq(d, "b") >= 3, 60)
        assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") >= 3, 30)
        model.hang.set()
        time.sleep(2.0)
        pings, a0 = notifier.messages.count("WATCHDOG=1"), seq(d, "a")
        time.sleep(2.0)
        try:
            assert notifier.messages.count("WATCHDOG=1") == pings  # b is stuck: not fed
            assert seq(d, "a") > a0 and d.probe_http()  # though camera a and HTTP go on
            assert any("watchdog not fed: inference loop stuck (camera b)" in r.getMessage() for r in caplog.records)
        finally:
            model.release.set()
        assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") > pings, 20)  # fed again once b moves


def test_a_camera_that_cannot_open_at_start_is_retried_while_the_others_run(lite0_model):
    cameras = {"ok": {"source": "synthetic"}, "gone": {"source": "/dev/video93"}}
    with running(lite0_model, tables={"cameras": cameras}) as d:
        assert wait_for(lambda: seq(d, "ok") >= 5, 60)
        ok, reason = d.cameras["gone"].loop.health()
        assert not ok and "reconnecting" in reason, reason
        assert seq(d, "gone") == 0
        status, body = get_json(d, "/api/cameras/gone/latest")
        assert status == 503
        status, body = get_json(d, "/healthz")
        assert status == 503 and "camera gone" in body["reason"]


def test_a_stream_camera_that_cannot_open_never_shows_its_password(lite0_model, caplog):
    """The retry of an unreachable rtsp:// camera is logged (the journal) and reported (/healthz,
    /api/cameras) without the credentials in its URL."""
    import logging

    caplog.set_level(logging.DEBUG, logger="edge_saliency")
    cameras = {"ok": {"source": "synthetic"}, "door": {"source": "rtsp://cam:hunter2@127.0.0.1:9/stream1"}}
    with running(lite0_model, tables={"cameras": cameras}) as d:
        assert wait_for(lambda: seq(d, "ok") >= 3, 60)
        assert not d.cameras["door"].loop.health()[0]
        texts = [request(d, "GET", p)[2].decode() for p in ("/healthz", "/api/cameras", "/metrics")]
        assert "door" in texts[0] and "rtsp://***@127.0.0.1:9/stream1" in texts[1]
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot open" in logs and "***@127.0.0.1:9" in logs
    assert "hunter2" not in logs and not any("hunter2" in t for t in texts)


def test_top_level_source_stays_the_default_camera_beside_the_tables(lite0_model, tmp_path):
    from edge_saliency.serve.config import load_config
    from edge_saliency.serve.daemon import Daemon

    (tmp_path / "c.toml").write_text('source = "synthetic"\nlisten = "127.0.0.1:0"\n'
                                     '[cameras.side]\nsource = "synthetic"\nview = "raw"\n')
    d = Daemon(load_config(tmp_path / "c.toml", env={}), model=lite0_model, notifier=RecordingNotifier(None)).start()
    try:
        assert list(d.cameras) == ["default", "side"] and d.cameras["side"].view == "raw"
        assert wait_for(lambda: seq(d, "default") >= 1 and seq(d, "side") >= 1, 60)
        assert get_json(d, "/api/latest")[1]["camera"] == "default"
        assert get_json(d, "/api/cameras/side/latest")[1]["camera"] == "side"
    finally:
        d.stop()


def test_rate_caps_a_cameras_frames(lite0_model):
    import time

    with running(lite0_model, realtime="false", tables={"cameras": {"slow": {"source": "synthetic", "rate": 4}}}) as d:
        assert wait_for(lambda: seq(d, "slow") >= 2, 60)
        s0, t0 = seq(d, "slow"), time.monotonic()
        time.sleep(2.5)
        n, elapsed = seq(d, "slow") - s0, time.monotonic() - t0
        assert 1 <= n <= 4 * elapsed + 1, (n, elapsed)


@pytest.mark.parametrize("toml,words", [
    ('[cameras.door]\nview = "raw"\n', "[cameras.door] key 'source': must be set"),
    ('[cameras.door]\nsource = "synthetic"\nview = "xray"\n', "[cameras.door] key 'view': must be one of"),
    ('[cameras.door]\nsource = "synthetic"\nrate = 0\n', "[cameras.door] key 'rate': must be at least 0.01"),
    ('[cameras.door]\nsource = "synthetic"\nsorce = "x"\n', "[cameras.door]: unknown key 'sorce' (did you mean 'source'?)"),
    ('[cameras."front door"]\nsource = "synthetic"\n', "camera name 'front door' must be 1..32 letters"),
    ('[cameras]\ndoor = "synthetic"\n', "'door' must be a table [cameras.door]"),
])
def test_camera_config_errors_are_one_line_naming_the_key(tmp_path, toml, words):
    from serve_util import serve_config_error

    line = serve_config_error(tmp_path, 'model = "missing.onnx"\n' + toml)
    assert words in line, line


def test_a_camera_source_that_names_nothing_stops_the_start_naming_the_camera(tmp_path, lite0_onnx):
    from serve_util import serve

    (tmp_path / "c.toml").write_text(f'model = "{lite0_onnx}"\nlisten = "127.0.0.1:0"\n[cameras.a]\nsource = "synthetic"\n'
                                     '[cameras.b]\nsource = "/no/such/video.mp4"\n')
    p = serve(["--config", "c.toml"], tmp_path)
    assert p.returncode == 78 and "Traceback" not in p.stderr, p.stderr  # EX_CONFIG (issue-16)
    assert p.stderr.strip().splitlines()[-1].startswith("edge-saliency: error: camera 'b': --source '/no/such/video.mp4'")


def test_example_config_documents_every_camera_and_mqtt_key():
    import re
    import tomllib
    from pathlib import Path

    from edge_saliency.serve.cameras import CAMERA_OPTIONS, parse_cameras_table
    from edge_saliency.serve.mqtt import MQTT_OPTIONS, parse_mqtt_table

    text = (Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml").read_text()
    tail = text[text.index("# ---- several cameras"):]
    uncommented = "\n".join(re.sub(r"^# ?", "", ln) if re.match(r"^# ?(\[|[a-z_]+ = )", ln) else ln
                            for ln in tail.splitlines())
    tables = tomllib.loads(uncommented)
    assert set(tables["mqtt"]) == set(MQTT_OPTIONS)
    assert set(CAMERA_OPTIONS) - {"loop", "stale_after"} <= set(tables["cameras"]["door"])
    assert "loop" in tail and "stale_after" in tail
    cams = parse_cameras_table(tables["cameras"], "[cameras]")
    assert cams["door"]["rate"] == 5 and cams["yard"]["source"] == "/dev/video2"
    mq = {k: v for k, v in tables["mqtt"].items() if not k.endswith("_file")}
    assert parse_mqtt_table(mq, "[mqtt]", env={})["host"] == "broker.local"


def test_serial_model_lets_one_thread_in_at_a_time():
    import time

    from edge_saliency.serve.cameras import SerialModel

    class Fake:
        inside = peak = 0
        labels = ["a"]

        def _enter(self):
            Fake.inside += 1
            Fake.peak = max(Fake.peak, Fake.inside)
            time.sleep(0.01)
            Fake.inside -= 1
            return "ok"

        def predict(self, *a, **kw):
            return self._enter()

        def run(self, *a, **kw):
            return self._enter()

    m = SerialModel(Fake())
    threads = [threading.Thread(target=lambda: [m.predict(None) if i % 2 else m.run(None) for i in range(5)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Fake.peak == 1 and m.labels == ["a"]


def test_openvino_cameras_and_explain_jobs_share_one_serialised_model(lite0_onnx):
    pytest.importorskip("openvino", reason="openvino not installed: pip install 'edge-saliency[openvino]'")
    from edge_saliency.runtime.model import SaliencyModel
    from edge_saliency.serve.cameras import SerialModel

    model = SaliencyModel(lite0_onnx, threads=1, engine="openvino")
    cams = {"a": {"source": "synthetic"}, "b": {"source": "synthetic"}}
    with running(model, tables={"cameras": cams}) as d:
        assert isinstance(d.cameras["a"].loop.model, SerialModel)
        assert d.cameras["a"].loop.model is d.cameras["b"].loop.model is d.jobs.model
        assert wait_for(lambda: seq(d, "a") >= 3 and seq(d, "b") >= 3, 60)
        status, _, body = request(d, "POST", "/api/explain", json.dumps({"method": "rise", "camera": "b"}),
                                  {"Content-Type": "application/json"})
        assert status == 202
        job = json.loads(body)["url"]
        done = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(get_json(d, job)[1]), 90)
        assert done["state"] == "done", done
        s0 = seq(d, "a")
        assert wait_for(lambda: seq(d, "a") >= s0 + 3, 30)
        text = request(d, "GET", "/metrics")[2].decode()
        assert metric_value(text, "edge_saliency_build_info", {"engine": "openvino"}) == 1


def test_a_video_camera_that_ends_leaves_the_live_one_running(lite0_model, tmp_path):
    from edge_saliency.pipeline.sources import SyntheticSource

    video = tmp_path / "short.mp4"
    gen = SyntheticSource("synthetic", fps=30.0, size=(320, 240))
    gen.open()
    gen.write_video(video, 20)
    cams = {"live": {"source": "synthetic"}, "clip": {"source": str(video), "loop": False, "realtime": False}}
    with running(lite0_model, tables={"cameras": cams}) as d:
        assert d.cameras["clip"].loop.replay is False and d.cameras["live"].loop.replay is True
        assert wait_for(lambda: not d.cameras["clip"].loop.health()[0] and seq(d, "clip") > 0, 60)
        ok, reason = d.cameras["clip"].loop.health()
        assert "ended" in reason, reason
        assert 0 < seq(d, "clip") <= 20  # every frame of the clip at most once, then nothing
        s0 = seq(d, "live")
        assert wait_for(lambda: seq(d, "live") >= s0 + 10, 30)
        assert d.cameras["live"].loop.health()[0]
        status, body = get_json(d, "/healthz")
        assert status == 503 and "camera clip" in body["reason"] and "end of file" in body["reason"]
