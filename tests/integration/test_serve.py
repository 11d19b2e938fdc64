"""`edge-saliency serve` in-process on 127.0.0.1:<ephemeral> with synthetic sources: every endpoint's
status, content type and body; MJPEG parts; explain jobs; metrics; auth; malformed requests;
health when the camera dies and returns; the watchdog fed only while frames progress."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

import edge_saliency

from serve_util import (MjpegReader, RecordingNotifier, Switchable, decode_jpeg, get_json, metric_value, raw,
                        request, running, start_daemon, wait_for)


@pytest.fixture(scope="module")
def daemon(lite0_model):
    d = start_daemon(lite0_model, explain_queue=1, topk=4)
    assert wait_for(lambda: d.loop.latest and d.loop.latest.seq >= 2), "no frames processed"  # fps needs two
    yield d
    d.stop()


def test_page_has_the_stream_the_views_and_the_api(daemon):
    status, h, body = request(daemon, "GET", "/")
    assert status == 200 and h["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert '<img id="stream"' in page and "stream.mjpg?view=fastcam" in page
    for v in ("heatmap", "recipro", "fastcam", "lovi", "side", "raw"):
        assert f'data-view="{v}"' in page
    assert "api/latest" in page
    status, h, body = request(daemon, "HEAD", "/")
    assert status == 200 and body == b"" and int(h["content-length"]) == len(page.encode())


def test_latest_is_the_newest_result(daemon, lite0_model):
    status, a = get_json(daemon, "/api/latest")
    assert status == 200
    assert {"frame", "t_capture", "class", "label", "score", "topk", "box", "centroid", "fps", "latency_ms",
            "timings_ms"} <= set(a)
    assert len(a["topk"]) == 4 and a["topk"][0][0] == a["label"] == lite0_model.labels[a["class"]]
    assert 0 < a["score"] <= 1 and a["topk"][0][1] >= a["topk"][1][1]
    x0, y0, x1, y1 = a["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert a["fps"] > 0 and a["latency_ms"] > 0 and a["timings_ms"]["inference"] > 0
    b = wait_for(lambda: (lambda s: s[1] if s[1]["frame"] > a["frame"] else None)(get_json(daemon, "/api/latest")))
    assert b is not None and b["t_capture"] > a["t_capture"]


def test_frame_jpg_and_map_png(daemon, lite0_model):
    status, h, body = request(daemon, "GET", "/api/frame.jpg")
    assert status == 200 and h["content-type"] == "image/jpeg" and int(h["x-frame-id"]) > 0
    assert decode_jpeg(body).shape == (480, 640, 3)
    status, h, body = request(daemon, "GET", "/api/frame.jpg?view=side")
    assert status == 200 and decode_jpeg(body).shape == (480, 1280, 3)
    status, h, body = request(daemon, "GET", "/api/map.png")
    assert status == 200 and h["content-type"] == "image/png" and h["x-map"] == "fastcam"
    m = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    r = daemon.loop.latest.result
    assert m.dtype == np.uint8 and m.shape == r.smoe.shape and m.min() == 0 and m.max() >= 254  # min-max stretched
    status, h, body = request(daemon, "GET", "/api/map.png?map=recipro")
    assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED).shape == r.recipro_cam.shape


def test_mjpeg_stream_parts_are_jpeg_frames_of_newer_frames(daemon):
    s = MjpegReader(daemon, "/stream.mjpg?view=heatmap")
    try:
        assert s.status == 200 and s.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
        ids = []
        for _ in range(5):
            headers, data = s.part()
            assert headers["content-type"] == "image/jpeg"
            assert decode_jpeg(data).shape == (480, 640, 3)
            ids.append(int(headers["x-frame-id"]))
        assert ids == sorted(set(ids))  # each part a newer frame
    finally:
        s.close()


def test_viewers_of_one_view_share_one_encoder_and_a_stalled_viewer_does_not_stop_inference(daemon):
    slow = MjpegReader(daemon, "/stream.mjpg?view=lovi", rcvbuf=4096)
    fast = MjpegReader(daemon, "/stream.mjpg?view=lovi")
    try:
        fast.part()
        enc = daemon.streams.encoder("lovi")
        assert enc.viewers == 2
        metrics = request(daemon, "GET", "/metrics")[2].decode()
        assert metric_value(metrics, "edge_saliency_stream_viewers", {"view": "lovi"}) == 2
        assert sum(t.name == "encoder-lovi" for t in threading.enumerate()) == 1
        # the slow viewer reads nothing; the other viewer and inference go on
        start = daemon.loop.latest.seq
        got = [int(fast.part()[0]["x-frame-id"]) for _ in range(8)]
        assert got == sorted(set(got))
        assert daemon.loop.latest.seq >= start + 8
        # when it reads again it is soon sent the newest frames, not a backlog of every frame
        newest = daemon.loop.latest.frame.id
        seen = [int(slow.part()[0]["x-frame-id"]) for _ in range(12)]
        assert max(seen) >= newest
    finally:
        slow.close()
        fast.close()


def test_explain_jobs_in_graph_and_black_box(daemon):
    status, h, body = request(daemon, "POST", "/api/explain", json.dumps({"method": "fastcam"}),
                              {"Content-Type": "application/json"})
    assert status == 202 and h["content-type"] == "application/json"
    job = json.loads(body)
    assert h["location"] == job["url"] == f"/api/jobs/{job['job']}"
    done = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(get_json(daemon, job["url"])[1]))
    assert done["state"] == "done", done
    assert done["method"] == "fastcam" and done["result"]["queries"] == 1 and len(done["result"]["box"]) == 4
    status, h, png = request(daemon, "GET", done["map_url"])
    assert status == 200 and h["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2

    # black-box RISE on the newest frame, for a chosen class, within the query budget (30)
    status, _, body = request(daemon, "POST", "/api/explain", json.dumps({"method": "rise", "class": "Egyptian cat"}),
                              {"Content-Type": "application/json"})
    assert status == 202
    url = json.loads(body)["url"]
    done = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(get_json(daemon, url)[1]))
    assert done["state"] == "done", done
    assert done["result"]["class"] == 285 and done["result"]["label"] == "Egyptian cat"
    assert done["result"]["queries"] <= 30


def test_a_full_explain_queue_refuses_with_429(daemon):
    codes = []
    for _ in range(4):
        status, h, body = request(daemon, "POST", "/api/explain", b'{"method": "rise"}',
                                  {"Content-Type": "application/json"})
        codes.append(status)
        if status == 429:
            assert "queue full" in json.loads(body)["error"] and h["retry-after"]
    assert codes[0] == 202 and 429 in codes
    for status, _ in [get_json(daemon, "/api/latest")]:
        assert status == 200


@pytest.mark.parametrize("body,headers,status,words", [
    (b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    (b"[1, 2]", {"Content-Type": "application/json"}, 400, "JSON object"),
    (b'{"method": "xray"}', {"Content-Type": "application/json"}, 400, "unknown method"),
    (b'{"method": "rise", "class": 5000}', {"Content-Type": "application/json"}, 400, "out of range"),
    (b'{"method": "rise", "class": "unicorn"}', {"Content-Type": "application/json"}, 400, "no class named"),
    (b'{"method": "fastcam", "class": 1}', {"Content-Type": "application/json"}, 400, "class_index input"),
    (b'{"method": "rise", "path": "/etc/passwd"}', {"Content-Type": "application/json"}, 400, "unknown field"),
    (b"method=rise", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    (b"x" * 70000, {"Content-Type": "application/json"}, 413, "over the limit"),
])
def test_bad_explain_requests_get_4xx(daemon, body, headers, status, words):
    got, h, resp = request(daemon, "POST", "/api/explain", body, headers)
    assert got == status and h["content-type"] == "application/json"
    assert words in json.loads(resp)["error"]


def test_jobs_paths_name_no_files(daemon):
    for path in ("/api/jobs/0000000000000000", "/api/jobs/../../etc/passwd", "/api/jobs/%2e%2e%2fetc",
                 "/api/jobs/0000000000000000/map.png", "/../../etc/passwd", "/api/latest/../../../etc/passwd"):
        status, h, body = request(daemon, "GET", path)
        assert status == 404, path
        assert b"root:" not in body


def test_metrics_names_and_values(daemon):
    status, h, body = request(daemon, "GET", "/metrics")
    assert status == 200 and h["content-type"].startswith("text/plain") and "version=" in h["content-type"]
    text = body.decode()
    for name in ("edge_saliency_inference_seconds_bucket", "edge_saliency_inference_seconds_count",
                 "edge_saliency_frames_processed_total", "edge_saliency_frames_captured_total",
                 "edge_saliency_frames_dropped_total", "edge_saliency_camera_reconnects_total",
                 "edge_saliency_camera_faults_total", "edge_saliency_process_cpu_ratio",
                 "edge_saliency_process_cpu_seconds_total", "edge_saliency_process_rss_bytes",
                 "edge_saliency_frame_latency_seconds_bucket", "edge_saliency_camera_healthy"):
        assert metric_value(text, name, {} if "process" in name else {"camera": "default"}) is not None, name
    assert "edge_saliency_process_cpu_percent" not in text and "edge_saliency_fps" not in text  # the old names
    assert metric_value(text, "edge_saliency_inference_seconds_count", {"camera": "default"}) >= 1
    assert metric_value(text, "edge_saliency_frames_captured_total") >= metric_value(text, "edge_saliency_frames_processed_total")
    assert metric_value(text, "edge_saliency_process_rss_bytes") > 50e6
    assert 0 <= metric_value(text, "edge_saliency_process_cpu_ratio") <= 1
    assert metric_value(text, "edge_saliency_process_cpu_seconds_total") > 0
    assert metric_value(text, "edge_saliency_camera_healthy", {"camera": "default"}) == 1
    info = {"version": edge_saliency.__version__, "model": "efficientnet_lite0", "engine": "onnxruntime", "provider": "cpu"}
    assert metric_value(text, "edge_saliency_build_info", info) == 1
    for stage in ("capture_wait", "preprocess", "inference", "postprocess"):
        assert metric_value(text, "edge_saliency_stage_seconds_count", {"camera": "default", "stage": stage}) >= 1, stage


def test_device_temperature_from_thermal_zones(tmp_path):
    from edge_saliency.serve.prometheus import DaemonMetrics

    for i, (kind, milli) in enumerate((("cpu-thermal", "48500"), ("gpu-thermal", "51250"))):
        z = tmp_path / f"thermal_zone{i}"
        z.mkdir()
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(milli + "\n")
    (tmp_path / "thermal_zone2").mkdir()  # unreadable zone: left out
    text = DaemonMetrics(thermal_root=str(tmp_path)).render()[0].decode()
    assert metric_value(text, "edge_saliency_device_temperature_celsius", {"zone": "thermal_zone0", "type": "cpu-thermal"}) == 48.5
    assert metric_value(text, "edge_saliency_device_temperature_celsius", {"type": "gpu-thermal"}) == 51.25
    assert "thermal_zone2" not in text
    assert "edge_saliency_device_temperature_celsius" not in DaemonMetrics(thermal_root=str(tmp_path / "none")).render()[0].decode()


@pytest.mark.parametrize("data,status", [
    (b"hello\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 400),
    (b"BREW /coffee HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 405),
    (b"DELETE /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 405),
    (b"PUT /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}", 405),
    (b"POST /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405),
    (b"GET /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 405),
    (b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 404),
    (b"GET /api/latest?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /stream.mjpg?view=xray HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /stream.mjpg?view=raw&view=lovi HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /api/frame.jpg?view=%ff HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /api/map.png?map=../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
    (b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    (b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n{}", 413),
    (b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{}",
     400),
])
def test_malformed_requests_get_4xx_and_the_server_goes_on(daemon, data, status):
    got, resp = raw(daemon, data)
    assert got == status, resp[:300]
    assert 400 <= got < 500
    assert request(daemon, "GET", "/healthz")[0] == 200
    assert daemon.loop.running and daemon._http_thread.is_alive()


def test_bearer_token_guards_everything_but_healthz(lite0_model):
    token = "s3cret-token-for-tests"
    with running(lite0_model, token=token) as d:
        assert wait_for(lambda: d.loop.latest)
        for path in ("/", "/api/latest", "/api/frame.jpg", "/api/map.png", "/metrics", "/stream.mjpg",
                     "/api/jobs/0000000000000000"):
            status, h, body = request(d, "GET", path)
            assert status == 401 and h["www-authenticate"].startswith("Bearer"), path
            assert request(d, "GET", path, headers={"Authorization": "Bearer wrong-token-123"})[0] == 401
        status, _, _ = request(d, "POST", "/api/explain", b"{}", {"Content-Type": "application/json"})
        assert status == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert request(d, "GET", "/api/latest", headers=auth)[0] == 200
        assert request(d, "GET", "/metrics", headers=auth)[0] == 200
        assert request(d, "GET", "/healthz")[0] == 200
        # a browser: /?token= sets a cookie and redirects to / without the token in the URL
        status, h, _ = request(d, "GET", f"/?token={token}")
        assert status == 303 and h["location"] == "/" and "HttpOnly" in h["set-cookie"]
        cookie = h["set-cookie"].split(";")[0]
        assert request(d, "GET", "/", headers={"Cookie": cookie})[0] == 200
        s = MjpegReader(d, "/stream.mjpg?view=raw", headers={"Cookie": cookie})
        try:
            assert s.status == 200 and decode_jpeg(s.part()[1]).shape == (480, 640, 3)
        finally:
            s.close()
        assert request(d, "GET", "/?token=wrong-token-123")[0] == 401


def test_too_many_viewers_get_503(lite0_model):
    with running(lite0_model, max_viewers=1) as d:
        assert wait_for(lambda: d.loop.latest)
        s = MjpegReader(d, "/stream.mjpg?view=raw")
        try:
            s.part()
            status, h, body = request(d, "GET", "/stream.mjpg?view=fastcam")
            assert status == 503 and "too many viewers" in json.loads(body)["error"]
        finally:
            s.close()


def test_healthz_503_while_the_camera_is_gone_then_200_and_the_watchdog_follows_liveness_not_the_camera(lite0_model):
    """A camera that is gone is an error state (/healthz 503, the capture retrying), not a reason for
    systemd to kill the service: the watchdog goes on while the loop goes round and HTTP answers."""
    cam = Switchable()
    cam.open()
    notifier = RecordingNotifier(watchdog_usec=200_000)
    with running(lite0_model, source=cam, notifier=notifier, stale_after=0.5) as d:
        assert notifier.messages[0] == "READY=1"
        assert wait_for(lambda: request(d, "GET", "/healthz")[0] == 200)
        assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") >= 2)
        for round_ in range(2):
            cam.plug.clear()
            bad = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(get_json(d, "/healthz")))
            assert bad is not None and bad[1]["status"] == "unavailable"
            assert "no frames from switchable camera" in bad[1]["reason"] and "reconnecting" in bad[1]["reason"]
            pings = notifier.messages.count("WATCHDOG=1")
            assert wait_for(lambda: request(d, "GET", "/healthz")[0] == 503 and d.loop.capture.signal_lost_for > 1.0)
            assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") >= pings + 2)  # still alive
            assert request(d, "GET", "/healthz")[0] == 503
            cam.plug.set()
            good = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get_json(d, "/healthz")))
            assert good is not None and good[1]["status"] == "ok"
        text = request(d, "GET", "/metrics")[2].decode()
        assert metric_value(text, "edge_saliency_camera_reconnects_total") >= 2
        assert metric_value(text, "edge_saliency_camera_faults_total") >= 2
    assert notifier.messages[-1] == "STOPPING=1"
