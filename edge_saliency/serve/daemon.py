"""`edge-saliency serve`: the long-running device daemon.

    edge-saliency serve --config /etc/edge-saliency/config.toml
    edge-saliency serve --model m.onnx --source 0 --listen 127.0.0.1:8080

The same pieces as `edge-saliency run` (sources, latest-frame capture, model, render, salient
region), arranged for a service: an inference thread keeps the newest result (serve_engine),
MJPEG encoders render it per view for any number of viewers (serve_streams), a worker runs slower
explanations on request (serve_jobs), and one HTTP port serves it all (serve_http), with
Prometheus metrics (metrics_prom). Settings come from one TOML file with CLI flags on top
(config). Several cameras share the one model session, each with its own capture, inference
thread and streams (serve_cameras: `[cameras.NAME]` tables), and results can go to an MQTT broker
too (serve_mqtt: `[mqtt]`). Under systemd (Type=notify) it says READY=1 once serving, pings the watchdog only while
frames are captured and inferred (so a hung camera or inference gets the service restarted; with
several cameras, while any of them progresses: one dead camera reconnects on its own) and
STOPPING=1 on the way out (sdnotify).

SIGTERM/SIGINT: stop accepting connections, finish the frame in hand, close the streams, exit 0
(well within 2 s).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from edge_saliency.serve.config import Config, add_arguments, cli_values, load_config
from edge_saliency.errors import UserError

log = logging.getLogger("edge_saliency")


class Daemon:
    """Model + source + engine + streams + jobs + HTTP server, wired from a Config."""

    def __init__(self, cfg: Config, model=None, source=None, notifier=None, sources: dict | None = None,
                 default_model=None):
        """source: the default camera's (opened) source; sources: {camera name: opened source} (tests);
        default_model: log_fn -> path of the model to use when the config names none (the CLI's)."""
        from edge_saliency import __version__
        from edge_saliency.serve.prometheus import DaemonMetrics
        from edge_saliency.pipeline.render import Renderer
        from edge_saliency.serve.sdnotify import Notifier
        from edge_saliency.serve.cameras import Camera, SerialModel, camera_specs
        from edge_saliency.serve.http import DaemonHTTPServer
        from edge_saliency.serve.loop import Engine
        from edge_saliency.serve.jobs import ExplainJobs
        from edge_saliency.serve.streams import Streams

        self.cfg = cfg
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.metrics = DaemonMetrics()
        specs = camera_specs(cfg)
        if model is None:
            from edge_saliency.runtime.model import SaliencyModel

            if not cfg.model and default_model is None:
                raise UserError("no model configured (model = ... in the config, or --model)")
            path = cfg.model or str(default_model(log_fn=log.info))
            from edge_saliency.runtime.providers import GpuOptions

            gpu = GpuOptions(device_id=cfg.gpu_device, trt_fp16=cfg.trt_fp16, trt_workspace_mb=cfg.trt_workspace_mb,
                             trt_cache=cfg.trt_cache)
            model = SaliencyModel(path, provider=cfg.provider, threads=cfg.threads, engine=cfg.engine, gpu=gpu)
        self.model = model
        class_index = model.class_index(cfg["class"]) if cfg["class"] is not None else None
        if class_index is not None and not model.has_class_input:
            raise UserError(f"{model.path} was exported without a class_index input; re-export with --class-input "
                            "to explain a chosen class (config key 'class')")
        for spec in specs:  # checks each view against the model's outputs before anything starts
            try:
                Renderer(view=spec.view, outputs=model.outputs)
            except ValueError as exc:
                where = "config key 'view'" if spec.name == "default" and not cfg.cameras else f"[cameras.{spec.name}] key 'view'"
                raise UserError(f"{where}: {exc}") from None
        self.views = Renderer(outputs=model.outputs, view="raw").views
        self.metrics.set_build_info(__version__, model.info.arch, model.engine_name, model.provider)
        # one model session for every camera and the explain jobs; OpenVINO's one infer request takes one
        # frame at a time
        shared = SerialModel(model) if model.engine_name == "openvino" else model
        self.cameras: dict[str, Camera] = {}
        self._unopened: set[str] = set()
        opened = []
        try:
            for i, spec in enumerate(specs):
                src = (sources or {}).get(spec.name) or (source if i == 0 else None)
                if src is None:
                    src = self._open_source(spec, several=len(specs) > 1)
                opened.append(src)
                cm = self.metrics.camera(spec.name)
                engine = Engine(shared, src, realtime=spec.realtime, stale_after=spec.stale_after, topk=cfg.topk,
                                class_index=class_index, health_stale=cfg.health_stale, loop=spec.loop, metrics=cm,
                                name=spec.name, max_fps=spec.rate)
                streams = Streams(engine, self.make_renderer, self.views, cfg.jpeg_quality, cfg.stream_fps,
                                  cfg.max_viewers, cm)
                self.cameras[spec.name] = Camera(spec, src, engine, streams)
        except BaseException:
            for src in opened:
                src.release()
            raise
        self.default_camera = next(iter(self.cameras.values()))
        self.engine = self.default_camera.engine  # the default camera: /stream.mjpg, /api/latest ...
        self.streams = self.default_camera.streams
        self.metrics.watch_health(lambda: {n: c.engine.health() for n, c in self.cameras.items()})
        self.mqtt = None
        if cfg.mqtt is not None:
            from edge_saliency.serve.mqtt import MqttPublisher

            try:
                self.mqtt = MqttPublisher(cfg.mqtt, self, registry=self.metrics.registry)
            except BaseException:
                for src in opened:
                    src.release()
                raise
            for cam in self.cameras.values():
                cam.engine.listeners.append(self.mqtt.offer)
        self.jobs = ExplainJobs(shared, queue_size=cfg.explain_queue, keep=cfg.jobs_kept, budget=cfg.explain_budget,
                                metrics=self.metrics)
        host, port = cfg.host_port
        try:
            self.server = DaemonHTTPServer((host, port), self)
        except OSError as exc:
            for src in opened:
                src.release()
            raise UserError(f"cannot listen on {cfg.listen} (config key 'listen'): {exc.strerror or exc}") from None
        self.stopped = threading.Event()
        self._http_thread: threading.Thread | None = None
        self._watchdog_thread: threading.Thread | None = None

    def _open_source(self, spec, several: bool):
        """The camera's source, opened. One of several that cannot open yet is retried in the background."""
        from edge_saliency.pipeline.sources import SourceError, make_source, open_source

        if not several:
            return open_source(spec.source, log_fn=log.info)
        where = f"camera {spec.name!r}"
        if spec.source is None:
            return open_source(None, log_fn=log.info)
        try:
            src = make_source(spec.source)
        except SourceError as exc:
            raise UserError(f"{where}: {exc}") from None
        try:
            src.open()
        except SourceError as exc:
            log.warning("%s: cannot open %s yet (%s); retrying in the background, the other cameras go on",
                        where, src.describe(), exc)
            self._unopened.add(spec.name)
        return src

    def camera(self, name: str | None):
        """The named camera (None: the default one), or None."""
        return self.default_camera if name is None else self.cameras.get(name)

    def health(self) -> tuple[bool, str]:
        """Every camera fresh: (True, reason); with one camera exactly its engine's answer."""
        if len(self.cameras) == 1:
            return self.engine.health()
        states = {n: c.engine.health() for n, c in self.cameras.items()}
        bad = {n: r for n, (ok, r) in states.items() if not ok}
        if not bad:
            return True, f"{len(states)} cameras fresh"
        return False, "; ".join(f"camera {n}: {r}" for n, r in bad.items())

    def make_renderer(self, view: str):
        from edge_saliency.pipeline.render import Renderer

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
        for name, cam in self.cameras.items():
            cam.engine.start(needs_open=name in self._unopened)
        if self.mqtt is not None:
            self.mqtt.start()
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
        for cam in self.cameras.values():
            cam.streams.close()  # viewers get the closing boundary
        for cam in self.cameras.values():
            cam.engine.stop_event.set()  # every camera finishes its frame in hand at once
        for cam in self.cameras.values():
            cam.engine.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.jobs.stop()
        self.notifier.close()

    def _feed_watchdog(self) -> None:
        """WATCHDOG=1 only while frames come in and inference progresses; a short STATUS= too."""
        interval = self.notifier.watchdog_interval or 5.0
        last_seq: dict[str, int] = {}
        last_status = 0.0
        while not self.stopped.wait(min(interval, 1.0) if interval else 1.0):
            # fed while any camera is fresh and progressing: one dead camera of several must not get the
            # whole daemon restarted (it reconnects on its own, and /healthz names it)
            progressing = False
            for name, cam in self.cameras.items():
                cam_ok, _ = cam.engine.health()
                snap = cam.engine.latest
                seq = snap.seq if snap is not None else 0
                progressing |= cam_ok and seq != last_seq.get(name, -1)
                last_seq[name] = seq
            ok, reason = self.health()
            if progressing and self.notifier.watchdog_interval is not None:
                self.notifier.watchdog()
            now = time.monotonic()
            if now - last_status >= 10.0:
                last_status = now
                fps = ", ".join(f"{c.engine.fps:.1f}" for c in self.cameras.values())
                viewers = sum(c.streams.viewers for c in self.cameras.values())
                self.notifier.status(f"{fps} FPS, {viewers} viewers" if ok else f"unhealthy: {reason}")


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
    from edge_saliency.pipeline.live import _Stop

    cfg = load_config(Path(args.config) if args.config else None, cli=cli_values(args))
    level = getattr(logging, cfg.log_level.upper())
    logging.getLogger().setLevel(logging.DEBUG if getattr(args, "verbose", False) else level)
    daemon = Daemon(cfg, default_model=getattr(args, "default_model", None))
    stop = _Stop().install()
    clean = False
    try:
        daemon.start()
        if daemon.address[0] not in ("127.0.0.1", "::1", "localhost") and not cfg.token:
            log.warning("listening on %s without a token: anyone who can reach it sees the camera "
                        "(set token in the config or $EDGE_SALIENCY_TOKEN)", daemon.url)
        log.info("serving %s | %s | model: %s on %s | views: %s", daemon.url,
                 "source: " + daemon.engine.source.describe() if len(daemon.cameras) == 1 else
                 "cameras: " + ", ".join(f"{n} ({c.source.describe()})" for n, c in daemon.cameras.items()),
                 daemon.model.info.arch, daemon.model.provider, ", ".join(daemon.views))
        print(f"edge-saliency serving on {daemon.url}", flush=True)
        while not stop.flag.wait(0.5):
            errors = {n: c.engine.error for n, c in daemon.cameras.items() if c.engine.error}
            if errors and len(errors) == len(daemon.cameras):  # systemd restarts us (Restart=on-failure)
                raise UserError("inference loop failed: " + "; ".join(
                    e if len(errors) == 1 else f"camera {n}: {e}" for n, e in errors.items()))
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
# the threads that may be inside session.run when the daemon stops (one engine per camera)
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
