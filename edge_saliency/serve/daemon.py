"""`edge-saliency serve`: the long-running device daemon.

    edge-saliency serve --config /etc/edge-saliency/config.toml
    edge-saliency serve --model m.onnx --source 0 --listen 127.0.0.1:8080

The same pieces as `edge-saliency run` (sources, latest-frame capture, model, render, salient
region), arranged for a service: an inference thread keeps the newest result (loop.py),
MJPEG encoders render it per view for any number of viewers (streams.py), a worker runs slower
explanations on request (jobs.py), and one HTTP port serves it all (http.py), with
Prometheus metrics (prometheus.py). Settings come from one TOML file with CLI flags on top
(config.py). Several cameras share the one model session, each with its own capture, inference
thread and streams (cameras.py: `[cameras.NAME]` tables), and results can go to an MQTT broker
too (mqtt.py: `[mqtt]`). Under systemd (Type=notify) it says READY=1 once serving, pings the
watchdog only while every camera's inference loop goes round AND the HTTP server answers a
self-probe (so a hung inference or a dead HTTP server gets the service restarted; a camera that is
gone is not a reason: /healthz reports it and its capture keeps retrying) and STOPPING=1 on the
way out (sdnotify.py). Limits, Host/Origin checks, sessions and TLS: serve/security.py.

SIGTERM/SIGINT: stop accepting connections, finish the frame in hand, close the streams, exit 0
(well within 2 s). SIGHUP: reload the TLS certificate and the host names, keep serving.
Exit codes: 0 stopped, 1 runtime failure (systemd restarts), 78 bad configuration (EX_CONFIG: the
unit's RestartPreventExitStatus=, so it is not restarted every few seconds forever).
"""
from __future__ import annotations

import http.client
import logging
import signal
import ssl
import threading
import time

from edge_saliency.errors import UserError
from edge_saliency.serve.config import Config
from edge_saliency.settings import ConfigError

log = logging.getLogger("edge_saliency")

LIVE_KINDS = ("webcam", "stream", "gstreamer")  # sources that may come back later: retried, not fatal


class RuntimeFailure(UserError):
    """The daemon failed while running (not its configuration): systemd restarts it."""

    exit_code = 1


class Daemon:
    """Model + sources + camera loops + streams + jobs + HTTP server, wired from a Config."""

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
        from edge_saliency.serve.camera_loop import CameraLoop
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
            from edge_saliency.runtime.providers import gpu_options

            model = SaliencyModel(path, provider=cfg.provider, threads=cfg.threads, engine=cfg.engine,
                                  gpu=gpu_options(cfg))
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
        host, port = cfg.host_port
        self.token, self.token_generated = self._token(cfg, host)  # before any camera opens: a config error
        from edge_saliency.serve.security import load_tls

        self.tls = load_tls(cfg.tls_cert, cfg.tls_key)
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
                loop = CameraLoop(shared, src, realtime=spec.realtime, stale_after=spec.stale_after, topk=cfg.topk,
                                  class_index=class_index, health_stale=cfg.health_stale, replay=spec.loop, metrics=cm,
                                  name=spec.name, max_fps=spec.rate)
                streams = Streams(loop, self.make_renderer, self.views, cfg.jpeg_quality, cfg.stream_fps,
                                  cfg.max_viewers, cm)
                self.cameras[spec.name] = Camera(spec, src, loop, streams)
        except BaseException:
            for src in opened:
                src.release()
            raise
        self.default_camera = next(iter(self.cameras.values()))
        self.loop = self.default_camera.loop  # the default camera: /stream.mjpg, /api/latest ...
        self.streams = self.default_camera.streams
        self.metrics.watch_health(lambda: {n: c.loop.health() for n, c in self.cameras.items()})
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
                cam.loop.listeners.append(self.mqtt.offer)
        self.frames = self.streams.frames  # the default camera's /api/frame.jpg, cached per frame and view
        # explain jobs: their own model session at a lower priority (explain_threads), made at the first job
        self.jobs = ExplainJobs(shared, queue_size=cfg.explain_queue, keep=cfg.jobs_kept, budget=cfg.explain_budget,
                                metrics=self.metrics, timeout=cfg.explain_timeout,
                                model_factory=self._explain_model_factory(model))
        try:
            self.server = DaemonHTTPServer((host, port), self, tls=self.tls)
        except OSError as exc:
            for src in opened:
                src.release()
            if self.mqtt is not None:
                self.mqtt.stop()
            raise RuntimeFailure(f"cannot listen on {cfg.listen} (config key 'listen'): {exc.strerror or exc}") from None
        self.stopped = threading.Event()
        self._http_thread: threading.Thread | None = None
        self._watchdog_thread: threading.Thread | None = None
        self.http_alive_t: float | None = None  # monotonic time of the last answered self-probe
        self.watchdog_pings = 0

    # ------------------------------------------------------------------ security and isolation
    @staticmethod
    def _token(cfg: Config, host: str) -> tuple[str | None, bool]:
        """The token in force: none needed on loopback; beyond it one is required (or generated)."""
        from edge_saliency.serve.security import generate_token, is_loopback

        if cfg.token or is_loopback(host):
            return cfg.token, False
        if cfg.generate_token:
            return generate_token(), True
        raise ConfigError(f"listen = {cfg.listen!r} serves the network without a token: set token (config file, "
                          "$EDGE_SALIENCY_TOKEN or a systemd credential), or generate_token = true to have one "
                          "made at start")

    def _open_source(self, spec, several: bool):
        """The camera's source, opened if it can be. Never a silent fallback to the demo under systemd: a
        configured (or, in a service, the default) camera that does not open now is retried by the capture
        (health says so meanwhile); a file or folder that does not open is a configuration error."""
        from edge_saliency.pipeline.sources import SourceError, make_source, open_source

        where = f"camera {spec.name!r}: " if several else ""
        text = spec.source
        if text is None and not self.notifier.enabled:
            return open_source(None, log_fn=log.warning)  # interactive: camera 0, else the demo (said)
        if text is None:
            text = "0"
            log.warning("no source set in the config: using camera 0 (a service never falls back to the demo)")
        try:
            src = make_source(text)
        except SourceError as exc:
            if not several:
                raise
            raise UserError(f"{where}{exc}") from None
        try:
            src.open()
        except SourceError as exc:
            if src.kind not in LIVE_KINDS:
                if not several:
                    raise
                raise UserError(f"{where}{exc}") from None
            log.error("%s%s: %s; serving anyway and retrying in the background (health reports it)%s", where,
                      src.describe(), exc, ", the other cameras go on" if several else "")
            self._unopened.add(spec.name)
        return src

    def _explain_model_factory(self, model):
        """() -> the explain jobs' own model session (None: they share the live one)."""
        if self.cfg.explain_threads == 0 or not getattr(model, "path", None):
            return None
        from edge_saliency.runtime.model import SaliencyModel

        cfg = self.cfg
        engine = getattr(model, "engine_name", None) or (cfg.engine if cfg.engine != "auto" else "onnxruntime")
        return lambda: SaliencyModel(model.path, provider=cfg.provider, threads=cfg.explain_threads, engine=engine)

    def reload(self) -> None:
        """SIGHUP: a new TLS certificate (if TLS) and fresh host names; everything else needs a restart."""
        if self.tls is not None:
            self.tls.reload()
        self.server.hosts.refresh()
        log.info("SIGHUP: reloaded%s the allowed host names (other settings take a restart)",
                 " the TLS certificate and" if self.tls is not None else "")

    def camera(self, name: str | None):
        """The named camera (None: the default one), or None."""
        return self.default_camera if name is None else self.cameras.get(name)

    def health(self) -> tuple[bool, str]:
        """Every camera fresh: (True, reason); with one camera exactly its loop's answer."""
        if len(self.cameras) == 1:
            return self.loop.health()
        states = {n: c.loop.health() for n, c in self.cameras.items()}
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
        return f"{'https' if self.tls else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Daemon":
        for name, cam in self.cameras.items():
            cam.loop.start(needs_open=name in self._unopened)
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
            cam.loop.stop_event.set()  # every camera finishes its frame in hand at once
        for cam in self.cameras.values():
            cam.loop.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.jobs.stop()
        self.notifier.close()

    def probe_http(self, timeout: float = 2.0) -> bool:
        """GET /healthz over loopback (any HTTP answer counts): is the HTTP server serving?"""
        host, port = self.address
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        try:
            if self.tls is not None:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", "/healthz", headers={"Host": "127.0.0.1" if ":" not in host else "[::1]",
                                                         "User-Agent": "edge-saliency-watchdog"})
                conn.getresponse().read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False
        self.http_alive_t = time.monotonic()
        return True

    def inference_loops(self) -> dict:
        """name -> CameraLoop: every inference loop the watchdog must see going round (one per camera)."""
        return {name: cam.loop for name, cam in self.cameras.items()}

    def alive(self, last_beats: dict) -> tuple[bool, str]:
        """(alive, why not): every camera's inference loop went round since `last_beats` ({name: beats})
        and HTTP answered within the last 3 s. Whether frames are fresh does not matter (a camera that is
        gone is /healthz's business, and its capture retries)."""
        several = len(self.cameras) > 1
        for name, eng in self.inference_loops().items():
            where = f" (camera {name})" if several else ""
            if eng.error:
                return False, f"inference failed{where}: {eng.error}"
            if not eng.running:
                return False, f"inference loop not running{where}"
            if eng.beats == last_beats.get(name, -1):
                return False, f"inference loop stuck{where}"
        tick = min(self.notifier.watchdog_interval or 5.0, 1.0)  # the probe's period (_feed_watchdog)
        if self.http_alive_t is None or time.monotonic() - self.http_alive_t > max(3 * tick, 3.0):
            return False, "HTTP server not answering"
        return True, ""

    def _feed_watchdog(self) -> None:
        """WATCHDOG=1 only while every camera's loop goes round and HTTP answers its self-probe; STATUS= too."""
        interval = self.notifier.watchdog_interval or 5.0
        last_beats: dict = {}
        last_status = 0.0
        logged = ""
        while not self.stopped.wait(min(interval, 1.0) if interval else 1.0):
            self.probe_http(timeout=min(2.0, max(0.5, interval)))
            if self.stopped.is_set():
                return
            alive, why = self.alive(last_beats)
            last_beats = {name: eng.beats for name, eng in self.inference_loops().items()}
            if alive and self.notifier.watchdog_interval is not None:
                self.notifier.watchdog()
                self.watchdog_pings += 1
            if not alive and why != logged:
                log.warning("watchdog not fed: %s", why)
            logged = "" if alive else why
            ok, reason = self.health()
            now = time.monotonic()
            if now - last_status >= 10.0:
                last_status = now
                fps = ", ".join(f"{c.loop.fps:.1f}" for c in self.cameras.values())
                viewers = sum(c.streams.viewers for c in self.cameras.values())
                self.notifier.status(f"{fps} FPS, {viewers} viewers" if ok else f"unhealthy: {reason}")


def _reload_on_sighup(event: threading.Event):
    """SIGHUP -> a flag the main loop acts on (never the default action, which kills the process)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return None
    return signal.signal(signal.SIGHUP, lambda signum, frame: event.set())


def serve_forever(load, default_model=None, verbose: bool = False) -> int:
    """`edge-saliency serve`: load() -> the Config; start the daemon, reload on SIGHUP, stop on
    SIGINT/SIGTERM (exit 0), exit 1 when an inference loop or the HTTP server fails."""
    hup = threading.Event()
    old_hup = _reload_on_sighup(hup)  # before the slow start: a SIGHUP then must not kill us either
    try:
        return _serve(load(), hup, default_model, verbose)
    finally:
        if old_hup is not None:
            signal.signal(signal.SIGHUP, old_hup)


def _serve(cfg: Config, hup: threading.Event, default_model, verbose: bool) -> int:
    from edge_saliency.pipeline.frame_loop import StopSignal

    level = getattr(logging, cfg.log_level.upper())
    logging.getLogger().setLevel(logging.DEBUG if verbose else level)
    try:
        daemon = Daemon(cfg, default_model=default_model)
    except (ConfigError, RuntimeFailure):
        raise
    except UserError as exc:  # a model, view, class, camera or source that cannot work: a config problem
        raise ConfigError(str(exc)) from None
    stop = StopSignal().install()
    clean = False
    try:
        daemon.start()
        if daemon.token_generated:  # printed once, here only (not logged)
            print(f"edge-saliency: generated token for this run: {daemon.token}", flush=True)
        log.info("serving %s | %s | model: %s on %s | views: %s", daemon.url,
                 "source: " + daemon.loop.source.describe() if len(daemon.cameras) == 1 else
                 "cameras: " + ", ".join(f"{n} ({c.source.describe()})" for n, c in daemon.cameras.items()),
                 daemon.model.info.arch, daemon.model.provider, ", ".join(daemon.views))
        print(f"edge-saliency serving on {daemon.url}", flush=True)
        while not stop.flag.wait(0.5):
            if hup.is_set():
                hup.clear()
                daemon.reload()
            # a failed inference loop (not a camera that is gone) is the watchdog's reason too: exit 1 at
            # once, systemd restarts us (Restart=always)
            errors = {n: c.loop.error for n, c in daemon.cameras.items() if c.loop.error}
            if errors:
                raise RuntimeFailure("inference loop failed: " + "; ".join(
                    e if len(daemon.cameras) == 1 else f"camera {n}: {e}" for n, e in errors.items()))
            if not daemon._http_thread.is_alive():
                raise RuntimeFailure("the HTTP server stopped")
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
# the threads that may be inside session.run when the daemon stops (one camera loop per camera)
INFERENCE_THREADS = ("camera-loop", "explain-worker")


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
