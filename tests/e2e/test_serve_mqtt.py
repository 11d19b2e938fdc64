"""The daemon's MQTT publisher against a real broker (Debian's mosquitto, started here on a free
loopback port with its own config file): result JSON and overlay images on their topics, the
availability topic and its last will, the rate limit, a broker killed and restarted mid-run and a
frozen (SIGSTOP) broker while the frame loop goes on, per-camera topics, Home Assistant discovery,
TLS with a password, and the [mqtt] keys checked like the others."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from debian_tools import Mosquitto, tool
from serve_util import decode_jpeg, metric_value, request, running, wait_for

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed: pip install 'edge-saliency[mqtt]'")


class Subscriber:
    """A paho client of the test's own that keeps every message (and resubscribes after reconnecting)."""

    def __init__(self, port, topic, tls=None, auth=None):
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        if auth:
            self.c.username_pw_set(*auth)
        if tls:
            self.c.tls_set(ca_certs=tls)
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.on_message = self._on_message
        self.c.connect_async("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def on(self, topic):
        with self.lock:
            return [m for m in self.messages if m[0] == topic]

    def results(self, topic):
        return [json.loads(m[1]) for m in self.on(topic)]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path).start()
    yield b
    b.kill()


def mqtt_table(broker, **kw):
    t = {"host": "127.0.0.1", "port": broker.port, "prefix": "test/es", "reconnect_min": 0.1, "reconnect_max": 0.5,
         "keepalive": 5}
    t.update(kw)
    return t


def test_results_overlays_and_availability_on_their_topics(lite0_model, broker):
    sub = Subscriber(broker.port, "test/es/#")
    try:
        with running(lite0_model, topk=3, tables={"mqtt": mqtt_table(broker, rate=0, qos=1, overlay="overlay",
                                                                     overlay_rate=2, overlay_view="side")}) as d:
            assert wait_for(lambda: len(sub.on("test/es/default/result")) >= 5, 60), sub.messages[-3:]
            assert wait_for(lambda: sub.on("test/es/default/overlay"), 30)
            online = sub.on("test/es/availability")
            assert online and online[0][1] == b"online"
            res = sub.results("test/es/default/result")
            r = res[-1]
            assert r["camera"] == "default" and r["model"] == "efficientnet_lite0"
            assert r["engine"] == "onnxruntime" and r["provider"] == "cpu"
            assert r["label"] == lite0_model.labels[r["class"]] and 0 < r["score"] <= 1
            assert len(r["topk"]) == 3 and r["topk"][0]["label"] == r["label"]
            assert r["topk"][0]["score"] >= r["topk"][1]["score"] >= r["topk"][2]["score"]
            x0, y0, x1, y1 = r["region"]["box"]
            assert 0 <= x0 < x1 <= r["width"] == 640 and 0 <= y0 < y1 <= r["height"] == 480
            assert 0 < r["region"]["area"] <= 1 and r["region"]["map"] == "fastcam"
            assert abs(r["time"] - time.time()) < 60 and r["time_iso"].endswith("Z")
            frames = [x["frame"] for x in res]
            assert frames == sorted(set(frames))  # each a newer frame
            # rate = 0: every processed frame, none skipped while the broker is up
            assert frames[-1] - frames[0] + 1 >= len(frames) and len(frames) >= 5
            img = decode_jpeg(sub.on("test/es/default/overlay")[-1][1])
            assert img.shape == (480, 1280, 3)  # the side-by-side view
            text = request(d, "GET", "/metrics")[2].decode()
            assert metric_value(text, "edge_saliency_mqtt_connected") == 1
            assert metric_value(text, "edge_saliency_mqtt_messages_published_total",
                                {"camera": "default", "topic": "result"}) >= 5
        # a clean stop says offline (retained), the will is not needed
        assert wait_for(lambda: [m for m in sub.on("test/es/availability") if m[1] == b"offline"], 10)
    finally:
        sub.close()


def test_rate_limits_results_and_map_images_are_png(lite0_model, broker):
    sub = Subscriber(broker.port, "test/es/#")
    try:
        with running(lite0_model, realtime="false",
                     tables={"mqtt": mqtt_table(broker, rate=2, overlay="map", overlay_format="png", overlay_rate=1,
                                                retain=True)}) as d:
            assert wait_for(lambda: len(sub.on("test/es/default/result")) >= 2, 60)
            t0, n0, seq0 = time.monotonic(), len(sub.on("test/es/default/result")), d.loop.latest.seq
            time.sleep(3.0)
            n, seqs = len(sub.on("test/es/default/result")) - n0, d.loop.latest.seq - seq0
            elapsed = time.monotonic() - t0
            assert 1 <= n <= 2 * elapsed + 1, (n, elapsed)
            assert seqs > n  # frames were processed between the messages
            import cv2
            import numpy as np

            png = sub.on("test/es/default/overlay")[-1][1]
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            m = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            assert m.ndim == 2 and m.shape == d.loop.latest.result.smoe.shape
        # retain = true: a subscriber that comes later still gets the last result and image at once
        late = Subscriber(broker.port, "test/es/default/#")
        try:
            assert wait_for(lambda: late.on("test/es/default/result") and late.on("test/es/default/overlay"), 10)
            assert all(m[2] for m in late.messages)  # delivered as retained messages
            assert late.results("test/es/default/result")[-1]["frame"] == sub.results("test/es/default/result")[-1]["frame"]
        finally:
            late.close()
    finally:
        sub.close()


def test_broker_killed_and_restarted_publishing_resumes_and_the_loop_never_stalled(lite0_model, broker):
    sub = Subscriber(broker.port, "test/es/#")
    try:
        with running(lite0_model, tables={"mqtt": mqtt_table(broker, rate=0, queue_size=5)}) as d:
            assert wait_for(lambda: len(sub.on("test/es/default/result")) >= 3, 60)
            broker.kill()
            assert wait_for(lambda: not d.mqtt.connected.is_set(), 10), "the daemon did not notice the broker died"
            seq0, frame_at_kill = d.loop.latest.seq, d.loop.latest.frame.id
            down_at = time.monotonic()
            # the frame loop goes on while the broker is away; the queue keeps only the newest 5
            assert wait_for(lambda: d.loop.latest.seq >= seq0 + 10, 30), "the frame loop stalled"
            text = request(d, "GET", "/metrics")[2].decode()
            assert metric_value(text, "edge_saliency_mqtt_connected") == 0
            assert metric_value(text, "edge_saliency_mqtt_queue_messages") <= 5
            assert metric_value(text, "edge_saliency_mqtt_messages_dropped_total",
                                {"camera": "default", "reason": "queue_full"}) >= 5
            assert d.loop.health()[0]  # /healthz is about frames, not the broker
            time.sleep(max(0.0, 1.5 - (time.monotonic() - down_at)))
            seq_before_restart = d.loop.latest.seq
            broker.start()
            assert wait_for(lambda: d.mqtt.connected.is_set(), 20), "no reconnect after the broker came back"
            assert wait_for(lambda: any(r["frame"] > frame_at_kill + 10 for r in sub.results("test/es/default/result")),
                            30), "publishing did not resume"
            assert d.loop.latest.seq > seq_before_restart
            assert d.mqtt.connects == 2
            assert wait_for(lambda: [m for m in sub.on("test/es/availability") if m[1] == b"online"][1:], 10)
            text = request(d, "GET", "/metrics")[2].decode()
            assert metric_value(text, "edge_saliency_mqtt_connects_total") == 2
            assert metric_value(text, "edge_saliency_mqtt_connected") == 1
    finally:
        sub.close()


def test_a_frozen_broker_does_not_hold_up_the_frame_loop(lite0_model, broker):
    """SIGSTOP: the broker keeps the TCP connection open but reads nothing (a hung broker, a dead link)."""
    sub = Subscriber(broker.port, "test/es/#")
    try:
        with running(lite0_model, tables={"mqtt": mqtt_table(broker, rate=0, qos=1, queue_size=10,
                                                             overlay="overlay", overlay_rate=0)}) as d:
            assert wait_for(lambda: len(sub.on("test/es/default/result")) >= 3, 60)
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                seq0 = d.loop.latest.seq
                assert wait_for(lambda: d.loop.latest.seq >= seq0 + 15, 30), "the frame loop stalled"
                assert d.loop.health()[0]
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            frame = d.loop.latest.frame.id
            assert wait_for(lambda: any(r["frame"] > frame for r in sub.results("test/es/default/result")), 30)
    finally:
        sub.close()


def test_each_camera_publishes_on_its_own_topic(lite0_model, broker):
    sub = Subscriber(broker.port, "test/es/#")
    try:
        cams = {"door": {"source": "synthetic"}, "yard": {"source": "synthetic"}}
        with running(lite0_model, tables={"cameras": cams, "mqtt": mqtt_table(broker, rate=5)}):
            for cam in cams:
                assert wait_for(lambda: len(sub.on(f"test/es/{cam}/result")) >= 2, 60), cam
                assert all(r["camera"] == cam for r in sub.results(f"test/es/{cam}/result"))
        assert not sub.on("test/es/default/result")
    finally:
        sub.close()


def test_last_will_offline_when_the_daemon_is_killed(lite0_onnx, broker, tmp_path):
    from serve_util import env_for

    (tmp_path / "c.toml").write_text(f'model = "{lite0_onnx}"\nsource = "synthetic"\nlisten = "127.0.0.1:0"\n'
                                     'threads = 1\n\n[mqtt]\nhost = "127.0.0.1"\n'
                                     f'port = {broker.port}\nprefix = "will/test"\nkeepalive = 5\n')
    sub = Subscriber(broker.port, "will/test/#")
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "serve", "--config", "c.toml"], cwd=tmp_path,
                            env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: sub.on("will/test/default/result"), 60), (proc.poll(), sub.messages[-3:])
        assert sub.on("will/test/availability")[-1][1] == b"online"
        proc.send_signal(signal.SIGKILL)  # no clean disconnect: the broker must send the will
        proc.wait(10)
        assert wait_for(lambda: [m for m in sub.on("will/test/availability") if m[1] == b"offline"], 20), sub.messages[-3:]
        late = Subscriber(broker.port, "will/test/availability")  # retained: a newcomer learns it is offline
        try:
            assert wait_for(lambda: late.on("will/test/availability"), 10)
            topic, payload, retained, _ = late.on("will/test/availability")[-1]
            assert payload == b"offline" and retained
        finally:
            late.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert "MQTT connected to 127.0.0.1" in proc.stderr.read()


def _certificates(folder):
    openssl = tool("openssl", "openssl")
    run = lambda *a: subprocess.run([openssl, *a], cwd=folder, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=edge-saliency test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "san.ext")
    return folder / "ca.crt"


def test_tls_with_username_and_password(lite0_model, tmp_path):
    ca = _certificates(tmp_path)
    passwd = tool("mosquitto_passwd", "mosquitto")
    subprocess.run([passwd, "-b", "-c", str(tmp_path / "passwd"), "camera", "s3cret-pass"], check=True,
                   capture_output=True)
    b = Mosquitto(tmp_path, anonymous=False, extra=f"cafile {ca}\ncertfile {tmp_path / 'server.crt'}\n"
                                                   f"keyfile {tmp_path / 'server.key'}\npassword_file {tmp_path / 'passwd'}\n")
    b.start()
    sub = Subscriber(b.port, "tls/#", tls=str(ca), auth=("camera", "s3cret-pass"))
    try:
        good = {"host": "127.0.0.1", "port": b.port, "prefix": "tls", "tls": True, "ca_file": str(ca),
                "username": "camera", "password": "s3cret-pass", "reconnect_min": 0.1, "reconnect_max": 0.5}
        with running(lite0_model, tables={"mqtt": good}):
            assert wait_for(lambda: sub.on("tls/default/result"), 60), sub.messages[-3:]
        with running(lite0_model, tables={"mqtt": dict(good, password="wrong-pass")}) as d:
            assert wait_for(lambda: d.loop.latest and d.loop.latest.seq >= 5, 60)  # frames go on regardless
            assert not d.mqtt.connected.is_set() and d.mqtt.connects == 0
    finally:
        sub.close()
        b.kill()


@pytest.mark.parametrize("table,words", [
    ('[mqtt]\nport = 1883\n', "[mqtt] key 'host': must be set"),
    ('[mqtt]\nhost = "b"\nqos = 3\n', "[mqtt] key 'qos': must be at most 2, got 3"),
    ('[mqtt]\nhost = "b"\nprefix = "a/#"\n', "[mqtt] key 'prefix': must be a topic path without wildcards"),
    ('[mqtt]\nhost = "b"\nretian = true\n', "[mqtt]: unknown key 'retian' (did you mean 'retain'?)"),
    ('[mqtt]\nhost = "b"\npassword = "x"\n', "[mqtt] key 'password': needs 'username' too"),
    ('[mqtt]\nhost = "b"\ntls = true\nca_file = "/nonexistent/ca.crt"\n', "[mqtt] key 'ca_file': file not found"),
    ('[mqtt]\nhost = "b"\noverlay = "video"\n', "[mqtt] key 'overlay': must be one of: none, map, overlay"),
    ('mqtt = "b"\n', "'mqtt' must be a table ([mqtt])"),
])
def test_mqtt_config_errors_are_one_line_naming_the_key(tmp_path, table, words):
    from serve_util import serve_config_error

    line = serve_config_error(tmp_path, 'source = "synthetic"\n' + table)
    assert words in line, line


def test_mqtt_password_from_the_environment_and_defaults(tmp_path):
    from edge_saliency.serve.config import load_config

    (tmp_path / "c.toml").write_text('[mqtt]\nhost = "broker.lan"\nusername = "cam"\ntls = true\n')
    cfg = load_config(tmp_path / "c.toml", env={"EDGE_SALIENCY_MQTT_PASSWORD": "from-env"})
    m = cfg.mqtt
    assert m["password"] == "from-env" and m["port"] == 8883  # TLS default port
    assert m["prefix"] == "edge-saliency" and m["qos"] == 0 and m["rate"] == 2.0 and m["overlay"] == "none"
    assert m["client_id"].startswith("edge-saliency-")
    assert load_config(tmp_path / "c.toml", env={}).mqtt["password"] is None
    assert load_config(None, env={}).mqtt is None and load_config(None, env={}).cameras == {}


def test_home_assistant_discovery_configs(lite0_model, broker):
    sub = Subscriber(broker.port, "ha/#")
    try:
        cams = {"door": {"source": "synthetic"}, "yard": {"source": "synthetic"}}
        table = mqtt_table(broker, discovery=True, discovery_prefix="ha", client_id="kitchen-pi", overlay="overlay")
        with running(lite0_model, tables={"cameras": cams, "mqtt": table}):
            assert wait_for(lambda: len(sub.messages) >= 6, 30), sub.messages
        configs = {m[0]: json.loads(m[1]) for m in sub.messages}
        assert set(configs) == {f"ha/{kind}/kitchen-pi/{cam}_{obj}/config" for cam in cams
                                for kind, obj in (("sensor", "class"), ("sensor", "score"), ("camera", "overlay"))}
        label = configs["ha/sensor/kitchen-pi/door_class/config"]
        assert label["state_topic"] == label["json_attributes_topic"] == "test/es/door/result"
        assert label["value_template"] == "{{ value_json.label }}"
        assert label["availability_topic"] == "test/es/availability" and label["payload_not_available"] == "offline"
        assert label["device"]["identifiers"] == ["kitchen-pi"] and "efficientnet_lite0" in label["device"]["model"]
        assert configs["ha/camera/kitchen-pi/yard_overlay/config"]["topic"] == "test/es/yard/overlay"
        assert len({c["unique_id"] for c in configs.values()}) == 6
    finally:
        sub.close()
    late = Subscriber(broker.port, "ha/#")  # retained: Home Assistant finds them when it (re)starts
    try:
        assert wait_for(lambda: len(late.messages) >= 6, 10) and all(m[2] for m in late.messages)
    finally:
        late.close()


def test_without_paho_an_mqtt_table_is_one_clear_error(lite0_model, monkeypatch):
    from edge_saliency.errors import UserError

    for name in ("paho", "paho.mqtt", "paho.mqtt.client"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    with pytest.raises(UserError, match=r"the \[mqtt\] table needs paho-mqtt: pip install 'edge-saliency\[mqtt\]'"):
        with running(lite0_model, tables={"mqtt": {"host": "127.0.0.1", "port": 1}}):
            pass
