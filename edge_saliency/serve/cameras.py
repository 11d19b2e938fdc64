"""Several cameras in one daemon: `[cameras.NAME]` tables, one shared model session.

    [cameras.door]
    source = "rtsp://10.0.0.5/stream1"
    view = "fastcam"          # default: the top-level view
    rate = 5                  # most frames per second run through the model (default: as fast as it goes)

    [cameras.yard]
    source = "/dev/video2"

Each camera has its own latest-frame capture thread and inference thread (serve/camera_loop.CameraLoop)
and its own MJPEG encoders (serve_streams.Streams); all of them share the one model session
(ONNX Runtime's session.run is thread-safe; OpenVINO's single infer request is serialised here).
A camera that fails (unplugged, a stream that ends, a source that will not open) is reported by
its own health and metrics and reconnects on its own; the others go on.

Without `[cameras]` the top-level `source` and `view` make the one camera, named "default". With
it, the first table is the default camera (what /stream.mjpg and /api/latest show), unless a
top-level `source` is set too: then that one is "default" and the tables come after it.

URLs per camera: /cameras/NAME/stream.mjpg, /api/cameras/NAME/latest (and frame.jpg, map.png);
/api/cameras lists them with their health.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from edge_saliency.settings import ConfigError, Option, check_table, in_range

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
DEFAULT = "default"

CAMERA_OPTIONS = {o.name: o for o in [
    Option("source", str, None, "camera index or /dev/videoN, video file, image folder, rtsp:// URL, GStreamer "
           "pipeline, 'demo' or 'synthetic' (required)"),
    Option("view", str, None, "default view of this camera's stream (default: the top-level view)", nullable=True),
    Option("rate", float, None, "most frames per second run through the model (default: as fast as it goes)",
           in_range(0.01, 1000.0), nullable=True),
    Option("realtime", bool, None, "as the top-level key, for this camera", nullable=True),
    Option("loop", bool, None, "as the top-level key, for this camera", nullable=True),
    Option("stale_after", float, None, "as the top-level key, for this camera", in_range(0.05, 3600), nullable=True),
]}


@dataclass
class CameraSpec:
    name: str
    source: str | None
    view: str
    rate: float | None
    realtime: bool
    loop: bool
    stale_after: float | None


def parse_cameras_table(raw: dict, where: str, env=None) -> dict:
    """[cameras.NAME] tables -> {name: {key: value}} (None for keys that follow the top level)."""
    from edge_saliency.pipeline.render import VIEWS

    out = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name!r} must be a table [cameras.{name}] with source = ..., got {table!r:.60}")
        if not NAME.fullmatch(name):
            raise ConfigError(f"{where}: camera name {name!r} must be 1..32 letters, digits, _ or - "
                              "(it is part of URLs, MQTT topics and metric labels)")
        sub = f"{where[:-1]}.{name}]" if where.endswith("]") else f"{where}.{name}"
        cam = check_table(table, CAMERA_OPTIONS, sub)
        if cam["source"] is None or not cam["source"].strip():
            raise ConfigError(f"{sub} key 'source': must be set")
        if cam["view"] is not None and cam["view"] not in VIEWS:
            raise ConfigError(f"{sub} key 'view': must be one of: {', '.join(VIEWS)}, got {cam['view']!r}")
        out[name] = cam
    return out


def camera_specs(cfg) -> list[CameraSpec]:
    """The cameras of a Config, the default one first."""
    tables = cfg.cameras or {}

    def spec(name, t):
        return CameraSpec(name, t["source"], t["view"] or cfg.view, t["rate"],
                          cfg.realtime if t["realtime"] is None else t["realtime"],
                          cfg.loop if t["loop"] is None else t["loop"],
                          cfg.stale_after if t["stale_after"] is None else t["stale_after"])

    top = CameraSpec(DEFAULT, cfg.source, cfg.view, None, cfg.realtime, cfg.loop, cfg.stale_after)
    if not tables:
        return [top]
    specs = [spec(n, t) for n, t in tables.items()]
    if cfg.source is not None:
        if DEFAULT in tables:
            raise ConfigError("config key 'source': set either the top-level source or [cameras.default], not both")
        specs.insert(0, top)
    return specs


class Camera:
    """One source with its frame loop and streams."""

    def __init__(self, spec: CameraSpec, source, loop, streams):
        self.spec = spec
        self.name = spec.name
        self.view = spec.view
        self.source = source
        self.loop = loop  # serve.camera_loop.CameraLoop
        self.streams = streams

    def status(self) -> dict:
        ok, reason = self.loop.health()
        snap = self.loop.latest
        return {"name": self.name, "source": self.source.describe() if self.source is not None else None,
                "view": self.view, "rate": self.spec.rate, "healthy": ok, "reason": reason,
                "fps": round(self.loop.fps, 2), "frame": snap.frame.id if snap is not None else None,
                "stream": f"/cameras/{self.name}/stream.mjpg", "latest": f"/api/cameras/{self.name}/latest"}


class SerialModel:
    """A model whose runs are serialised: OpenVINO's compiled model has one infer request, which two
    threads (cameras, explain jobs) must not use at once. ONNX Runtime's session needs no lock."""

    def __init__(self, model):
        self._model = model
        self._lock = threading.RLock()

    def predict(self, *a, **kw):
        with self._lock:
            return self._model.predict(*a, **kw)

    def predict_batch(self, *a, **kw):
        with self._lock:
            return self._model.predict_batch(*a, **kw)

    def run(self, *a, **kw):
        with self._lock:
            return self._model.run(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._model, name)
