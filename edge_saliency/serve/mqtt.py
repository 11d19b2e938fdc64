"""MQTT results of `edge-saliency serve` (paho-mqtt; `pip install 'edge-saliency[mqtt]'`).

    [mqtt]
    host = "broker.local"
    prefix = "edge-saliency"      # topics: edge-saliency/<camera>/result, .../overlay, edge-saliency/availability
    rate = 2.0                    # result messages per second per camera (0: every processed frame)

Topics:
  <prefix>/<camera>/result    JSON per processed frame, or at most `rate` a second: class, label,
                              score, top-k, salient region (box, centroid, area), frame id and
                              capture time, model, engine, provider, latency
  <prefix>/<camera>/overlay   optional (`overlay = "map" | "overlay"`): the saliency map or the
                              rendered overlay as JPEG or PNG bytes, at most `overlay_rate` a second
  <prefix>/availability       "online" (retained) once connected; "offline" (retained) on a clean
                              stop, and from the broker as the last will when the daemon dies
  <discovery_prefix>/...      with `discovery = true`: Home Assistant MQTT discovery configs
                              (retained, sent on every connect): per camera a class sensor (the
                              whole result as its attributes), a score sensor and, with overlay, a
                              camera entity, grouped under one device

Never in the way of the frame loop: the inference thread only appends the snapshot to a bounded
queue (the oldest entry is dropped when it is full, counted in
edge_saliency_mqtt_messages_dropped_total); one publisher thread makes the payloads and hands them
to paho, whose own network thread connects, and reconnects with exponential backoff
(reconnect_min .. reconnect_max seconds) for as long as the daemon runs. While the broker is away
the queue keeps only the newest `queue_size` messages.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import deque

from edge_saliency.settings import ConfigError, Option, check_table, in_range, one_of

log = logging.getLogger("edge_saliency")

PASSWORD_ENV = "EDGE_SALIENCY_MQTT_PASSWORD"
AVAILABILITY = "availability"


def _topic_prefix_check(v):
    if not v or v.startswith("/") or v.endswith("/") or any(c in v for c in "+#\0") or "//" in v:
        return "must be a topic path without wildcards (+ #) or leading/trailing /"
    if len(v.encode("utf-8")) > 200:
        return "must be at most 200 bytes"
    return None


def _file_check(v):
    return None if os.path.isfile(v) else "file not found"


def _host_check(v):
    if not v.strip() or any(c.isspace() for c in v) or "/" in v:
        return "must be a host name or address (no scheme, no path)"
    return None


def _client_id_check(v):
    return None if 0 < len(v.encode("utf-8")) <= 64 and v.isprintable() else "must be 1..64 printable bytes"


MQTT_OPTIONS = {o.name: o for o in [
    Option("host", str, None, "broker host name or address (required)", _host_check),
    Option("port", int, None, "broker port (default: 1883, 8883 with tls)", in_range(1, 65535), nullable=True),
    Option("client_id", str, None, "MQTT client id (default: edge-saliency-<hostname>)", _client_id_check,
           nullable=True),
    Option("prefix", str, "edge-saliency", "topic prefix: <prefix>/<camera>/result", _topic_prefix_check),
    Option("username", str, None, "user name for the broker", nullable=True),
    Option("password", str, None, f"password for the broker (or ${PASSWORD_ENV})", nullable=True),
    Option("tls", bool, False, "connect with TLS"),
    Option("ca_file", str, None, "CA certificate(s) to verify the broker with (default: the system's)", _file_check,
           nullable=True),
    Option("cert_file", str, None, "client certificate for TLS client authentication", _file_check, nullable=True),
    Option("key_file", str, None, "private key of cert_file", _file_check, nullable=True),
    Option("tls_insecure", bool, False, "do not check the broker's host name against its certificate"),
    Option("qos", int, 0, "QoS of every message: 0, 1 or 2", in_range(0, 2)),
    Option("retain", bool, False, "publish results and overlays retained (availability is always retained)"),
    Option("rate", float, 2.0, "result messages per second per camera (0: every processed frame)", in_range(0.0, 1000.0)),
    Option("overlay", str, "none", "also publish an image per camera: none, map (the saliency map) or overlay "
           "(the rendered view)", one_of(("none", "map", "overlay"))),
    Option("overlay_view", str, None, "view rendered for overlay = \"overlay\" (default: the camera's view)",
           nullable=True),
    Option("overlay_format", str, "jpeg", "jpeg or png", one_of(("jpeg", "png"))),
    Option("overlay_rate", float, 1.0, "image messages per second per camera (0: every processed frame)",
           in_range(0.0, 1000.0)),
    Option("keepalive", int, 30, "seconds between keep-alive pings; the broker sends the last will after 1.5x this "
           "without a word", in_range(5, 3600)),
    Option("queue_size", int, 100, "messages waiting at most; the oldest is dropped beyond", in_range(1, 100000)),
    Option("reconnect_min", float, 0.5, "first reconnect delay, seconds (doubles up to reconnect_max)",
           in_range(0.05, 600)),
    Option("reconnect_max", float, 30.0, "longest reconnect delay, seconds", in_range(0.1, 3600)),
    Option("discovery", bool, False, "publish Home Assistant MQTT discovery configs (retained) on every connect"),
    Option("discovery_prefix", str, "homeassistant", "Home Assistant's discovery prefix", _topic_prefix_check),
]}


def parse_mqtt_table(raw: dict, where: str, env=None) -> dict:
    """The [mqtt] table, checked: {key: value} for every key."""
    from edge_saliency.pipeline.render import VIEWS

    env = os.environ if env is None else env
    cfg = check_table(raw, MQTT_OPTIONS, where)
    if cfg["host"] is None:
        raise ConfigError(f"{where} key 'host': must be set (the broker to publish to)")
    if env.get(PASSWORD_ENV):
        cfg["password"] = env[PASSWORD_ENV]
    if cfg["password"] is not None and cfg["username"] is None:
        raise ConfigError(f"{where} key 'password': needs 'username' too")
    if cfg["key_file"] is not None and cfg["cert_file"] is None:
        raise ConfigError(f"{where} key 'key_file': needs 'cert_file' too")
    if (cfg["ca_file"] or cfg["cert_file"]) and not cfg["tls"]:
        raise ConfigError(f"{where} key 'tls': must be true when ca_file or cert_file is set")
    if cfg["overlay_view"] is not None and cfg["overlay_view"] not in VIEWS:
        raise ConfigError(f"{where} key 'overlay_view': must be one of: {', '.join(VIEWS)}, got {cfg['overlay_view']!r}")
    if cfg["reconnect_max"] < cfg["reconnect_min"]:
        raise ConfigError(f"{where} key 'reconnect_max': must be at least reconnect_min ({cfg['reconnect_min']:g})")
    if cfg["port"] is None:
        cfg["port"] = 8883 if cfg["tls"] else 1883
    if cfg["client_id"] is None:
        cfg["client_id"] = re.sub(r"[^A-Za-z0-9_-]", "-", f"edge-saliency-{socket.gethostname()}")[:64]
    return cfg


def discovery_configs(cfg: dict, cameras: dict, model, version: str) -> list[tuple[str, dict]]:
    """[(topic, payload)] of the Home Assistant MQTT discovery configs:
    <discovery_prefix>/<component>/<node_id>/<object_id>/config."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", cfg["client_id"])
    prefix, dp = cfg["prefix"], cfg["discovery_prefix"]
    avail = {"availability_topic": f"{prefix}/{AVAILABILITY}", "payload_available": "online",
             "payload_not_available": "offline"}
    device = {"identifiers": [node], "name": f"edge-saliency {node}", "manufacturer": "edge-saliency",
              "model": f"{model.info.arch} ({model.engine_name}, {model.provider})", "sw_version": version}
    out = []
    for cam in cameras:
        result = f"{prefix}/{cam}/result"
        out.append((f"{dp}/sensor/{node}/{cam}_class/config", {
            "name": f"{cam} class", "unique_id": f"{node}_{cam}_class", "state_topic": result,
            "value_template": "{{ value_json.label }}", "json_attributes_topic": result, "icon": "mdi:eye",
            **avail, "device": device}))
        out.append((f"{dp}/sensor/{node}/{cam}_score/config", {
            "name": f"{cam} score", "unique_id": f"{node}_{cam}_score", "state_topic": result,
            "value_template": "{{ (value_json.score * 100) | round(1) }}", "unit_of_measurement": "%",
            "state_class": "measurement", **avail, "device": device}))
        if cfg["overlay"] != "none":
            out.append((f"{dp}/camera/{node}/{cam}_overlay/config", {
                "name": f"{cam} saliency", "unique_id": f"{node}_{cam}_overlay", "topic": f"{prefix}/{cam}/overlay",
                **avail, "device": device}))
    return out


def result_payload(camera: str, snap, model, engine_name: str) -> dict:
    """The JSON of <prefix>/<camera>/result."""
    rec = snap.record
    return {
        "camera": camera,
        "frame": rec["frame"],
        "seq": rec.get("seq"),
        "time": rec["t_capture"],  # capture time, Unix seconds
        "time_iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec["t_capture"]))
                    + f".{int((rec['t_capture'] % 1) * 1000):03d}Z",
        "class": rec["class"],
        "label": rec["label"],
        "score": rec["score"],
        "topk": [{"label": label, "score": score} for label, score in rec["topk"]],
        "region": {"map": rec["map"], "box": rec["box"], "centroid": rec["centroid"], "area": rec["region_area"]}
        if rec["box"] is not None else None,
        "width": int(snap.frame.image.shape[1]),
        "height": int(snap.frame.image.shape[0]),
        "latency_ms": rec.get("latency_ms"),
        "fps": rec.get("fps"),
        "model": model.info.arch,
        "model_file": os.path.basename(str(model.path)),
        "engine": engine_name,
        "provider": model.provider,
    }


class MqttPublisher:
    """One connection to the broker for every camera of the daemon; see the module doc."""

    def __init__(self, cfg: dict, daemon, registry=None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("the [mqtt] table needs paho-mqtt: pip install 'edge-saliency[mqtt]'") from None
        self.mqtt = mqtt
        self.cfg = cfg
        self.daemon = daemon
        self.prefix = cfg["prefix"]
        self.availability_topic = f"{self.prefix}/{AVAILABILITY}"
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._last_result: dict[str, float] = {}
        self._last_overlay: dict[str, float] = {}
        self._renderers: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.connects = 0
        self.published = 0
        self.dropped = 0
        self._warned_down = False
        self._metrics(registry)

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg["client_id"], clean_session=True,
                        protocol=mqtt.MQTTv311)
        if cfg["username"] is not None:
            c.username_pw_set(cfg["username"], cfg["password"])
        if cfg["tls"]:
            try:
                c.tls_set(ca_certs=cfg["ca_file"], certfile=cfg["cert_file"], keyfile=cfg["key_file"],
                          cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"[mqtt] TLS files: {exc}") from None
            if cfg["tls_insecure"]:
                c.tls_insecure_set(True)
        c.will_set(self.availability_topic, "offline", qos=max(1, cfg["qos"]), retain=True)
        c.reconnect_delay_set(cfg["reconnect_min"], cfg["reconnect_max"])
        c.max_queued_messages_set(cfg["queue_size"])
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        self.client = c

    def _metrics(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        from edge_saliency.serve.prometheus import PREFIX

        r = registry
        self.m_connected = Gauge(f"{PREFIX}_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.m_connects = Counter(f"{PREFIX}_mqtt_connects", "successful connections to the MQTT broker", registry=r)
        self.m_published = Counter(f"{PREFIX}_mqtt_messages_published", "MQTT messages handed to the broker "
                                   "connection", ["camera", "topic"], registry=r)
        self.m_dropped = Counter(f"{PREFIX}_mqtt_messages_dropped", "MQTT messages dropped (queue_full: the oldest "
                                 "waiting one made room for a newer one; refused: the client refused it)",
                                 ["camera", "reason"], registry=r)
        self.m_queue = Gauge(f"{PREFIX}_mqtt_queue_messages", "MQTT messages waiting to be published", registry=r)
        self.m_bytes = Counter(f"{PREFIX}_mqtt_published_bytes", "payload bytes of the published MQTT messages",
                               registry=r)

    # ------------------------------------------------------------------ paho callbacks (its network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if getattr(reason_code, "is_failure", False):
            if not self._warned_down:  # once per outage, not on every retry
                log.warning("MQTT broker %s:%d refused the connection: %s; retrying (every %g..%g s)", self.cfg["host"],
                            self.cfg["port"], reason_code, self.cfg["reconnect_min"], self.cfg["reconnect_max"])
                self._warned_down = True
            return
        self.connects += 1
        self.m_connects.inc()
        self.m_connected.set(1)
        client.publish(self.availability_topic, "online", qos=max(1, self.cfg["qos"]), retain=True)
        if self.cfg["discovery"]:
            from edge_saliency import __version__

            for topic, payload in discovery_configs(self.cfg, self.daemon.cameras, self.daemon.model, __version__):
                client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)
        log.info("MQTT connected to %s:%d%s; publishing on %s/<camera>/result", self.cfg["host"], self.cfg["port"],
                 " (again)" if self.connects > 1 else "", self.prefix)
        self._warned_down = False
        self.connected.set()
        with self._cond:
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected.clear()
        self.m_connected.set(0)
        if not self._stop.is_set():
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting with backoff, results queue meanwhile "
                        "(newest %d kept)", self.cfg["host"], self.cfg["port"], reason_code, self.cfg["queue_size"])

    def _on_connect_fail(self, client, userdata):
        if not self._warned_down and not self._stop.is_set():
            log.warning("MQTT broker %s:%d unreachable; retrying (every %g..%g s)", self.cfg["host"], self.cfg["port"],
                        self.cfg["reconnect_min"], self.cfg["reconnect_max"])
            self._warned_down = True

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "MqttPublisher":
        try:
            self.client.connect_async(self.cfg["host"], self.cfg["port"], keepalive=self.cfg["keepalive"])
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[mqtt] cannot connect to {self.cfg['host']}:{self.cfg['port']}: {exc}") from None
        self.client.loop_start()  # paho's network thread: connects, reconnects with backoff
        self._thread = threading.Thread(target=self._run, name="mqtt-publish", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Say offline (retained), disconnect cleanly (so the broker does not send the will)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self.connected.is_set():
                info = self.client.publish(self.availability_topic, "offline", qos=max(1, self.cfg["qos"]), retain=True)
                info.wait_for_publish(timeout)
            self.client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:
            log.debug("MQTT: stopping: %s", exc)
        self.client.loop_stop()

    # ------------------------------------------------------------------ from the inference threads
    def offer(self, camera: str, snap) -> None:
        """Called by a camera's inference thread for every processed frame: O(1), never blocks on the network."""
        now = snap.t_done
        items = []
        rate = self.cfg["rate"]
        if rate == 0 or now - self._last_result.get(camera, -1e9) >= 1.0 / rate:
            self._last_result[camera] = now
            items.append(("result", camera, snap))
        if self.cfg["overlay"] != "none":
            orate = self.cfg["overlay_rate"]
            if orate == 0 or now - self._last_overlay.get(camera, -1e9) >= 1.0 / orate:
                self._last_overlay[camera] = now
                items.append(("overlay", camera, snap))
        if not items:
            return
        with self._cond:
            for item in items:
                if len(self._queue) >= self.cfg["queue_size"]:
                    old = self._queue.popleft()
                    self.dropped += 1
                    self.m_dropped.labels(old[1], "queue_full").inc()
                self._queue.append(item)
            self.m_queue.set(len(self._queue))
            self._cond.notify()

    # ------------------------------------------------------------------ the publisher thread
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and (not self._queue or not self.connected.is_set()):
                    self._cond.wait(0.25)
                if self._stop.is_set():
                    return
                kind, camera, snap = self._queue.popleft()
                self.m_queue.set(len(self._queue))
            try:
                topic, payload = self._payload(kind, camera, snap)
            except Exception as exc:  # a bad frame must not end the publisher
                log.warning("MQTT: cannot make the %s message of %s frame %d: %s", kind, camera, snap.frame.id, exc)
                continue
            try:
                info = self.client.publish(topic, payload, qos=self.cfg["qos"], retain=self.cfg["retain"])
            except (ValueError, RuntimeError, OSError) as exc:
                info = None
                log.debug("MQTT publish failed: %s", exc)
            if info is not None and info.rc == self.mqtt.MQTT_ERR_SUCCESS:
                self.published += 1
                self.m_published.labels(camera, kind).inc()
                self.m_bytes.inc(len(payload))
            else:
                self.dropped += 1
                self.m_dropped.labels(camera, "refused").inc()

    def _payload(self, kind: str, camera: str, snap) -> tuple[str, bytes]:
        import cv2

        cam = self.daemon.cameras[camera]
        if kind == "result":
            data = result_payload(camera, snap, self.daemon.model, self.daemon.model.engine_name)
            return f"{self.prefix}/{camera}/result", json.dumps(data, separators=(",", ":")).encode("utf-8")
        if self.cfg["overlay"] == "map":
            from edge_saliency.pipeline.render import normalise_for_display

            m = snap.result.map(cam.loop.region_map)
            img = normalise_for_display(m)
        else:
            view = self.cfg["overlay_view"] or cam.view
            r = self._renderers.get((camera, view))
            if r is None:
                r = self._renderers[(camera, view)] = self.daemon.make_renderer(view)
            img = r.render(snap.frame.image, snap.result, cam.loop.hud)
        if self.cfg["overlay_format"] == "png":
            ok, buf = cv2.imencode(".png", img)
        else:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.daemon.cfg.jpeg_quality])
        if not ok:
            raise RuntimeError("image encoding failed")
        return f"{self.prefix}/{camera}/overlay", buf.tobytes()
