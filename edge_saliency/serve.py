"""`edge-saliency serve`: the long-running device daemon.

    edge-saliency serve --config /etc/edge-saliency/config.toml
    edge-saliency serve --model m.onnx --source 0 --listen 127.0.0.1:8080

The same pieces as `edge-saliency run` (sources, latest-frame capture, model, render, salient
region), arranged for a service: an inference thread keeps the newest result (serve_engine),
MJPEG encoders render it per view for any number of viewers (serve_streams), a worker runs slower
explanations on request (serve_jobs), and one HTTP port serves it all (serve_http), with
Prometheus metrics (metrics_prom). Settings come from one TOML file with CLI flags on top
(config). Under systemd (Type=notify) it says READY=1 once serving, pings the watchdog only while
frames are captured and inferred (so a hung camera or inference gets the service restarted) and
STOPPING=1 on the way out (sdnotify).

SIGTERM/SIGINT: stop accepting connections, finish the frame in hand, close the streams, exit 0
(well within 2 s).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from edge_saliency.config import Config, add_arguments, cli_values, load_config
from edge_saliency.errors import UserError

log = logging.getLogger("edge_saliency")


class Daemon:
    """Model + source + engine + streams + jobs + HTTP server, wired from a Config."""

    def __init__(self, cfg: Config, model=None, source=None, notifier=None):
        from edge_saliency.metrics_prom import DaemonMetrics
        from edge_saliency.render import Renderer
        from edge_saliency.sdnotify import Notifier
        from edge_saliency.serve_engine import Engine
        from edge_saliency.serve_http import DaemonHTTPServer
        from edge_saliency.serve_jobs import ExplainJobs
        from edge_saliency.serve_streams import Streams

        self.cfg = cfg
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.metrics = DaemonMetrics()
        if model is None:
            from edge_saliency.model import SaliencyModel, ensure_default_model

            path = cfg.model or str(ensure_default_model(log_fn=log.info))
            from edge_saliency.providers import GpuOptions

            gpu = GpuOptions(device_id=cfg.gpu_device, trt_fp16=cfg.trt_fp16, trt_workspace_mb=cfg.trt_workspace_mb,
                             trt_cache=cfg.trt_cache)
            model = SaliencyModel(path, provider=cfg.provider, threads=cfg.threads, engine=cfg.engine, gpu=gpu)
        self.model = model
        class_index = model.class_index(cfg["class"]) if cfg["class"] is not None else None
        if class_index is not None and not model.has_class_input:
            raise UserError(f"{model.path} was exported without a class_index input; re-export with --class-input "
                            "to explain a chosen class (config key 'class')")
        try:  # checks the view against the model's outputs before anything starts
            Renderer(view=cfg.view, outputs=model.outputs)
        except ValueError as exc:
            raise UserError(f"config key 'view': {exc}") from None
        self.views = Renderer(outputs=model.outputs, view="raw").views
        if source is None:
            from edge_saliency.sources import open_source

            source = open_source(cfg.source, log_fn=log.info)
        self.engine = Engine(model, source, realtime=cfg.realtime, stale_after=cfg.stale_after, topk=cfg.topk,
                             class_index=class_index, health_stale=cfg.health_stale, loop=cfg.loop,
                             metrics=self.metrics)
        self.streams = Streams(self.engine, self.make_renderer, self.views, cfg.jpeg_quality, cfg.stream_fps,
                               cfg.max_viewers, self.metrics)
        self.jobs = ExplainJobs(model, queue_size=cfg.explain_queue, keep=cfg.jobs_kept, budget=cfg.explain_budget,
                                metrics=self.metrics)
        host, port = cfg.host_port
        try:
            self.server = DaemonHTTPServer((host, port), self)
        except OSError as exc:
            source.release()
            raise UserError(f"cannot listen on {cfg.listen} (config key 'listen'): {exc.strerror or exc}") from None
        self.stopped = threading.Event()
        self._http_thread: threading.Thread | None = None
        self._watchdog_thread: threading.Thread | None = None

    def make_renderer(self, view: str):
        from edge_saliency.render import Renderer

        cfg = self.cfg
        return Renderer(view=view, alpha=cfg.alpha, colormap=cfg.colormap, hud=cfg.hud, topk=min(cfg.topk, 5),
                        scale_names=self.model.info.scale_names, provider=self.model.provider,
                        outputs=self.model.outputs)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Daemon":
        self.engine.start()
        self.jobs.start()
        self._http_thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                             name="http", daemon=True)
        self._http_thread.start()
        if self.notifier.enabled:
            self._watchdog_thread = threading.Thread(target=self._feed_watchdog, name="watchdog", daemon=True)
            self._watchdog_thread.start()
        self.notifier.ready(f"serving {self.url}")
        return self

    def stop(self) -> None:
        """Stop accepting, finish the frame in hand, close the streams."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.notifier.stopping()
        self.server.shutdown()  # no new connections from here on
        self.server.server_close()
        self.streams.close()  # viewers get the closing boundary
        self.engine.stop()
        self.jobs.stop()
        self.notifier.close()

    def _feed_watchdog(self) -> None:
        """WATCHDOG=1 only while frames come in and inference progresses; a short STATUS= too."""
        interval = self.notifier.watchdog_interval or 5.0
        last_seq = -1
        last_status = 0.0
        while not self.stopped.wait(min(interval, 1.0) if interval else 1.0):
            ok, reason = self.engine.health()
            snap = self.engine.latest
            seq = snap.seq if snap is not None else 0
            if ok and seq != last_seq and self.notifier.watchdog_interval is not None:
                self.notifier.watchdog()
            last_seq = seq
            now = time.monotonic()
            if now - last_status >= 10.0:
                last_status = now
                self.notifier.status(f"{self.engine.fps:.1f} FPS, {self.streams.viewers} viewers"
                                     if ok else f"unhealthy: {reason}")


# ---------------------------------------------------------------------- CLI
def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="long-running daemon: live saliency stream, results API, metrics, health (systemd-ready)",
        description="Serve live saliency over HTTP: a web page, MJPEG streams per view, the newest result as JSON, "
                    "explanations on request, Prometheus metrics and a health check. Every option can also be set "
                    "in a TOML file (--config); flags override it. The bearer token comes from the config key "
                    "'token' or $EDGE_SALIENCY_TOKEN.")
    p.add_argument("--config", metavar="FILE", help="TOML file with any of the options below (keys: the flag names "
                                                    "with _ for -)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from edge_saliency.live import _Stop

    cfg = load_config(Path(args.config) if args.config else None, cli=cli_values(args))
    level = getattr(logging, cfg.log_level.upper())
    logging.getLogger().setLevel(logging.DEBUG if getattr(args, "verbose", False) else level)
    daemon = Daemon(cfg)
    stop = _Stop().install()
    clean = False
    try:
        daemon.start()
        if daemon.address[0] not in ("127.0.0.1", "::1", "localhost") and not cfg.token:
            log.warning("listening on %s without a token: anyone who can reach it sees the camera "
                        "(set token in the config or $EDGE_SALIENCY_TOKEN)", daemon.url)
        log.info("serving %s | source: %s | model: %s on %s | views: %s", daemon.url, daemon.engine.source.describe(),
                 daemon.model.info.arch, daemon.model.provider, ", ".join(daemon.views))
        print(f"edge-saliency serving on {daemon.url}", flush=True)
        while not stop.flag.wait(0.5):
            if daemon.engine.error:  # systemd restarts us (Restart=on-failure)
                raise UserError(f"inference loop failed: {daemon.engine.error}")
        clean = True
    finally:
        t0 = time.perf_counter()
        daemon.stop()
        stop.restore()
        # all of the stop within 8 s: systemd's TimeoutStopSec=10 kills what is left after that
        finish_inference(limit=max(0.5, STOP_BUDGET_S - (time.perf_counter() - t0)), hard_exit=clean)
        log.info("stopped (%s) in %.2f s", stop.reason or "exit", time.perf_counter() - t0)
    return 0


STOP_BUDGET_S = 8.0
# the threads that may be inside session.run when the daemon stops
INFERENCE_THREADS = ("engine", "explain-worker")


def finish_inference(limit: float = 8.0, say=log.info, hard_exit: bool = True) -> bool:
    """Wait for a frame still in session.run after stop() (a slow device takes seconds per frame).

    Letting the interpreter exit under it destroys the ONNX Runtime session while it runs: ORT then
    aborts the process (SIGABRT, a core dump) instead of the clean exit 0 systemd expects. Waits at
    most `limit` s (within the unit's TimeoutStopSec=10); if inference is still running then, the
    process leaves with os._exit(0), skipping the teardown that would abort. True when none was left.
    (The ARM64 check found it: under emulation a frame takes seconds, and SIGTERM ended in SIGABRT.)"""
    t0 = time.perf_counter()
    busy = [t for t in threading.enumerate() if t.name in INFERENCE_THREADS and t.is_alive()]
    if not busy:
        return True
    say(f"waiting for the inference in progress to finish ({', '.join(t.name for t in busy)})")
    for t in busy:
        t.join(max(0.0, limit - (time.perf_counter() - t0)))
    left = [t.name for t in busy if t.is_alive()]
    if not left or not hard_exit:  # an error on its way out: let it be reported
        return not left
    log.warning("inference still running after %.0f s (%s): exiting without tearing the session down",
                limit, ", ".join(left))
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(0)
