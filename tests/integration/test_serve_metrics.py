"""/metrics by Prometheus' conventions, checked by Prometheus' own linter (`promtool check metrics`,
Debian package prometheus) on the real output of a daemon with two cameras, MQTT, a viewer and an
explain job, so every metric family has samples; and the names the docs promise."""
from __future__ import annotations

import json
import subprocess

from debian_tools import Mosquitto, tool
from serve_util import MjpegReader, metric_value, request, running, wait_for


def test_promtool_finds_nothing_to_complain_about(lite0_model, tmp_path):
    promtool = tool("promtool", "prometheus")
    broker = Mosquitto(tmp_path).start()
    try:
        tables = {"cameras": {"door": {"source": "synthetic"}, "yard": {"source": "synthetic", "view": "lovi"}},
                  "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "lint"}}
        with running(lite0_model, tables=tables) as d:
            assert wait_for(lambda: all(c.loop.latest for c in d.cameras.values()), 60)
            s = MjpegReader(d, "/cameras/yard/stream.mjpg")
            try:
                s.part()
                status, _, body = request(d, "POST", "/api/explain", json.dumps({"method": "fastcam"}),
                                          {"Content-Type": "application/json"})
                assert status == 202
                job = json.loads(body)["url"]
                assert wait_for(lambda: json.loads(request(d, "GET", job)[2])["state"] == "done", 60)
                assert wait_for(lambda: d.mqtt.published >= 2, 30)
                request(d, "GET", "/healthz")
                text = request(d, "GET", "/metrics")[2].decode()
            finally:
                s.close()
    finally:
        broker.kill()
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr

    families = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    for name, kind in families.items():
        assert name.startswith("edge_saliency_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
        assert not name.endswith("_created"), name  # no _created series beside every counter and histogram
        assert "percent" not in name and not name.endswith(("_ms", "_mb", "_fps")), name
    for name in ("edge_saliency_inference_seconds", "edge_saliency_frame_latency_seconds", "edge_saliency_stage_seconds"):
        assert families[name] == "histogram", name
    assert families["edge_saliency_process_cpu_ratio"] == "gauge"
    assert families["edge_saliency_process_cpu_seconds_total"] == "counter"
    for cam in ("door", "yard"):
        assert metric_value(text, "edge_saliency_frames_processed_total", {"camera": cam}) >= 1
        assert metric_value(text, "edge_saliency_inference_seconds_count", {"camera": cam}) >= 1
    assert metric_value(text, "edge_saliency_stream_frames_sent_total", {"camera": "yard", "view": "lovi"}) >= 1
    assert metric_value(text, "edge_saliency_explain_jobs_total", {"state": "done"}) == 1
    assert metric_value(text, "edge_saliency_build_info", {"engine": "onnxruntime", "provider": "cpu"}) == 1
    assert 0 <= metric_value(text, "edge_saliency_process_cpu_ratio") <= 1


def test_the_old_names_are_gone_from_the_docs_and_the_page():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    texts = [p.read_text() for p in [root / "README.md", *(root / "deploy").glob("*.md"),
                                     *(root / "edge_saliency").glob("serve*.py")]]
    for old in ("edge_saliency_process_cpu_percent", "edge_saliency_fps"):
        assert not any(old in t for t in texts), old
