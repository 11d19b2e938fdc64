"""Prometheus metrics of the daemon (prometheus-client), on a registry of its own.

(`edge_saliency.metrics` is something else: the quality metrics of saliency maps.)

Measured in the loop: inference latency histogram, per-stage latency histograms, FPS.
Read at scrape time: frames captured/processed/dropped, camera faults and reconnects (from the
capture's counters), stream viewers, explain jobs, process CPU% and RSS (psutil), and each
thermal zone's temperature where /sys/class/thermal exposes it (Raspberry Pi, Jetson, laptops).
"""
from __future__ import annotations

import glob
import os

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "edge_saliency"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
STAGES = ("capture_wait", "preprocess", "inference", "postprocess", "render", "encode")
THERMAL_ROOT = "/sys/class/thermal"


class DaemonMetrics:
    def __init__(self, thermal_root: str = THERMAL_ROOT):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inference = Histogram(f"{PREFIX}_inference_seconds", "ONNX Runtime session.run time per frame",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram(f"{PREFIX}_stage_seconds", "time per frame in each stage of the pipeline",
                               ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram(f"{PREFIX}_frame_latency_seconds", "capture to result published",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.fps = Gauge(f"{PREFIX}_fps", "processed frames per second (moving average)", registry=r)
        self.processed = Counter(f"{PREFIX}_frames_processed", "frames run through the model", registry=r)
        self.http = Counter(f"{PREFIX}_http_requests", "HTTP requests answered", ["code"], registry=r)
        self.stream_frames = Counter(f"{PREFIX}_stream_frames_sent", "JPEG frames written to MJPEG viewers",
                                     ["view"], registry=r)
        self.viewers = Gauge(f"{PREFIX}_stream_viewers", "connected MJPEG viewers", ["view"], registry=r)
        self.jobs = Counter(f"{PREFIX}_explain_jobs", "explain jobs by final state", ["state"], registry=r)
        self.healthy = Gauge(f"{PREFIX}_healthy", "1 while frames are fresh (what /healthz says)", registry=r)
        for s in STAGES:
            self.stage.labels(s)
        self._capture = None
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # first call primes the counter
        self.thermal_root = thermal_root
        r.register(_ScrapeTime(self))

    def watch_capture(self, capture) -> None:
        """The capture whose counters /metrics reports (replaced when a finite source restarts)."""
        self._capture = capture

    def observe_frame(self, timings: dict[str, float], latency: float | None = None) -> None:
        self.processed.inc()
        for stage, seconds in timings.items():
            if stage == "inference":
                self.inference.observe(seconds)
            if stage in STAGES:
                self.stage.labels(stage).observe(seconds)
        if latency is not None:
            self.latency.observe(latency)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


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
        stats = dict(m._capture.stats) if m._capture is not None else {}
        for key, help_text in (("captured", "frames read from the source"),
                               ("dropped", "frames replaced by a newer one before the model took them"),
                               ("skipped", "unusable frames skipped (wrong shape, bit depth ...)"),
                               ("failed_reads", "reads from the source that returned nothing"),
                               ("faults", "times the source stopped delivering (camera gone, blocked)"),
                               ("reconnects", "times the source was reopened after a fault")):
            name = f"{PREFIX}_frames_{key}" if key in ("captured", "dropped", "skipped") else (
                f"{PREFIX}_camera_{key}")
            c = CounterMetricFamily(name, help_text)
            c.add_metric([], float(stats.get(key, 0)))
            yield c
        p = m._process
        try:
            with p.oneshot():
                cpu = p.cpu_percent(None)
                rss = p.memory_info().rss
                threads = p.num_threads()
        except psutil.Error:
            return
        for name, help_text, value in ((f"{PREFIX}_process_cpu_percent", "CPU use of this process since the last scrape "
                                        "(100 = one core)", cpu),
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
