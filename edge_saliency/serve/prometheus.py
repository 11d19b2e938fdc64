"""Prometheus metrics of the daemon (prometheus-client), on a registry of its own.

(`edge_saliency.quality.metrics` is something else: the quality metrics of saliency maps.)

Named by Prometheus' conventions (https://prometheus.io/docs/practices/naming/): base units with
the unit as suffix (`_seconds`, `_bytes`, `_celsius`), counters end in `_total`, shares are ratios
0..1 (`_ratio`), latencies are histograms, and `edge_saliency_build_info` (value 1) carries the
version, model, engine and provider as labels. Per-camera series carry a `camera` label (the one
camera of a single-source config is "default"). Frame rates are not exported as gauges: ask
Prometheus for `rate(edge_saliency_frames_processed_total[1m])`.

Measured in the loop: inference, per-stage and capture-to-result latency histograms.
Read at scrape time: frames captured/dropped/skipped, camera faults and reconnects (from each
capture's counters), each camera's health, process CPU (seconds and share of the machine's cores)
and RSS (psutil), and each thermal zone's temperature where /sys/class/thermal exposes it.
`promtool check metrics` finds nothing to complain about (tests/integration/test_serve_metrics.py).
"""
from __future__ import annotations

import glob
import os
import time

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "edge_saliency"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
STAGES = ("capture_wait", "preprocess", "inference", "postprocess", "render", "encode")
THERMAL_ROOT = "/sys/class/thermal"
CAPTURE_COUNTERS = (
    ("captured", f"{PREFIX}_frames_captured", "frames read from the source"),
    ("dropped", f"{PREFIX}_frames_dropped", "frames replaced by a newer one before the model took them"),
    ("skipped", f"{PREFIX}_frames_skipped", "unusable frames skipped (wrong shape, bit depth ...)"),
    ("failed_reads", f"{PREFIX}_camera_failed_reads", "reads from the source that returned nothing"),
    ("faults", f"{PREFIX}_camera_faults", "times the source stopped delivering (camera gone, blocked)"),
    ("reconnects", f"{PREFIX}_camera_reconnects", "times the source was reopened after a fault"),
)


class DaemonMetrics:
    def __init__(self, thermal_root: str = THERMAL_ROOT):
        try:  # no `_created` series beside every counter and histogram (the daemon's process is ours)
            from prometheus_client import disable_created_metrics

            disable_created_metrics()
        except ImportError:  # prometheus-client < 0.17
            pass
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inference = Histogram(f"{PREFIX}_inference_seconds", "model run time per frame (session.run)",
                                   ["camera"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram(f"{PREFIX}_stage_seconds", "time per frame in each stage of the pipeline",
                               ["camera", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram(f"{PREFIX}_frame_latency_seconds", "capture to result published",
                                 ["camera"], buckets=LATENCY_BUCKETS, registry=r)
        self.processed = Counter(f"{PREFIX}_frames_processed", "frames run through the model", ["camera"], registry=r)
        self.http = Counter(f"{PREFIX}_http_requests", "HTTP requests answered, by status code", ["code"], registry=r)
        self.stream_frames = Counter(f"{PREFIX}_stream_frames_sent", "JPEG frames written to MJPEG viewers",
                                     ["camera", "view"], registry=r)
        self.viewers = Gauge(f"{PREFIX}_stream_viewers", "connected MJPEG viewers", ["camera", "view"], registry=r)
        self.jobs = Counter(f"{PREFIX}_explain_jobs", "explain jobs by final state", ["state"], registry=r)
        self.healthy = Gauge(f"{PREFIX}_healthy", "1 while every camera's frames are fresh (what /healthz says)",
                             registry=r)
        self.build_info = Gauge(f"{PREFIX}_build_info", "always 1; the version, model, engine and provider in the "
                                "labels", ["version", "model", "engine", "provider"], registry=r)
        self.start_time = Gauge(f"{PREFIX}_start_time_seconds", "when the daemon started, Unix time", registry=r)
        self.start_time.set(time.time())
        self._captures: dict = {}
        self._health = None  # () -> {camera: (ok, reason)}
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # first call primes the counter
        self._cores = psutil.cpu_count() or 1
        self.thermal_root = thermal_root
        r.register(_ScrapeTime(self))

    def set_build_info(self, version: str, model: str, engine: str, provider: str) -> None:
        self.build_info.clear()
        self.build_info.labels(version, model, engine, provider).set(1)

    def watch_health(self, fn) -> None:
        """fn() -> {camera: (ok, reason)}, read at scrape time."""
        self._health = fn

    def camera(self, name: str) -> "CameraMetrics":
        for s in STAGES:
            self.stage.labels(name, s)
        self.processed.labels(name)
        self.inference.labels(name)
        self.latency.labels(name)
        return CameraMetrics(self, name)

    def watch_capture(self, capture, camera: str = "default") -> None:
        """The capture whose counters /metrics reports (replaced when a finite source restarts)."""
        self._captures[camera] = capture

    def observe_frame(self, timings: dict[str, float], latency: float | None = None, camera: str = "default") -> None:
        self.processed.labels(camera).inc()
        for stage, seconds in timings.items():
            if stage == "inference":
                self.inference.labels(camera).observe(seconds)
            if stage in STAGES:
                self.stage.labels(camera, stage).observe(seconds)
        if latency is not None:
            self.latency.labels(camera).observe(latency)

    def observe_stage(self, stage: str, seconds: float, camera: str = "default") -> None:
        self.stage.labels(camera, stage).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Bound:
    """A labelled metric with its first label (camera) filled in: .labels(view) -> .labels(camera, view)."""

    def __init__(self, metric, camera: str):
        self.metric, self.camera = metric, camera

    def labels(self, *values):
        return self.metric.labels(self.camera, *values)


class CameraMetrics:
    """What one camera's engine and streams see: the daemon's metrics with their camera label set."""

    def __init__(self, m: DaemonMetrics, camera: str):
        self.m, self.name = m, camera
        self.viewers = _Bound(m.viewers, camera)
        self.stream_frames = _Bound(m.stream_frames, camera)

    def watch_capture(self, capture) -> None:
        self.m.watch_capture(capture, self.name)

    def observe_frame(self, timings, latency=None) -> None:
        self.m.observe_frame(timings, latency, self.name)

    def observe_stage(self, stage, seconds) -> None:
        self.m.observe_stage(stage, seconds, self.name)


def thermal_zones(root: str = THERMAL_ROOT) -> list[tuple[str, str, float]]:
    """[(zone, type, degrees C)] for every readable thermal zone (empty where there is none)."""
    out = []
    for zone in sorted(glob.glob(os.path.join(root, "thermal_zone*"))):
        try:
            with open(os.path.join(zone, "temp")) as f:
                milli = int(f.read().strip())
        except (OSError, ValueError):
            continue
        try:
            with open(os.path.join(zone, "type")) as f:
                kind = f.read().strip()
        except OSError:
            kind = "unknown"
        out.append((os.path.basename(zone), kind, milli / 1000.0))
    return out


class _ScrapeTime:
    """Values read when Prometheus scrapes (no thread needed for them)."""

    def __init__(self, m: DaemonMetrics):
        self.m = m

    def describe(self):
        return []

    def collect(self):
        m = self.m
        captures = dict(m._captures)
        for key, name, help_text in CAPTURE_COUNTERS:
            c = CounterMetricFamily(name, help_text, labels=["camera"])
            for camera, cap in captures.items():
                c.add_metric([camera], float(cap.stats.get(key, 0)))
            yield c
        if m._health is not None:
            health = m._health()
            g = GaugeMetricFamily(f"{PREFIX}_camera_healthy", "1 while the camera's frames are fresh", labels=["camera"])
            for camera, (ok, _reason) in health.items():
                g.add_metric([camera], 1.0 if ok else 0.0)
            yield g
            m.healthy.set(1 if health and all(ok for ok, _ in health.values()) else 0)
        p = m._process
        try:
            with p.oneshot():
                share = p.cpu_percent(None) / 100.0 / m._cores
                times = p.cpu_times()
                rss = p.memory_info().rss
                threads = p.num_threads()
        except psutil.Error:
            return
        c = CounterMetricFamily(f"{PREFIX}_process_cpu_seconds", "CPU time of this process (user + system)")
        c.add_metric([], float(times.user + times.system))
        yield c
        for name, help_text, value in ((f"{PREFIX}_process_cpu_ratio", "share of all CPU cores this process used "
                                        "since the last scrape, 0..1", share),
                                       (f"{PREFIX}_process_rss_bytes", "resident memory of this process", rss),
                                       (f"{PREFIX}_process_threads", "threads of this process", threads)):
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], float(value))
            yield g
        zones = thermal_zones(m.thermal_root)
        if zones:
            g = GaugeMetricFamily(f"{PREFIX}_device_temperature_celsius", "temperature of each thermal zone",
                                  labels=["zone", "type"])
            for zone, kind, deg in zones:
                g.add_metric([zone, kind], deg)
            yield g
