"""`edge-saliency serve`: the long-running device daemon.

    edge-saliency serve --config /etc/edge-saliency/config.toml
    edge-saliency serve --model m.onnx --source 0 --listen 127.0.0.1:8080

The same pieces as `edge-saliency run` (sources, latest-frame capture, model, render, salient
region), arranged for a service: an inference thread keeps the newest result (serve_engine),
MJPEG encoders render it per view for any number of viewers (serve_streams), a worker runs slower
explanations on request (serve_jobs), and one HTTP port serves it all (serve_http), with
Prometheus metrics (metrics_prom). Settings come from one TOML file with CLI flags on top
(config). Under systemd (Type=notify) it says READY=1 once serving, pings the watchdog only while
the inference loop goes round AND the HTTP server answers a self-probe (so a hung inference or a
dead HTTP server gets the service restarted; a camera that is gone is not a reason: /healthz
reports it and the capture keeps retrying) and STOPPING=1 on the way out (sdnotify).

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
from pathlib import Path

from edge_saliency.config import Config, ConfigError, add_arguments, cli_values, load_config
from edge_saliency.errors import UserError

log = logging.getLogger("edge_saliency")

LIVE_KINDS = ("webcam", "stream", "gstreamer")  # sources that may come back later: retried, not fatal


class RuntimeFailure(UserError):
    """The daemon failed while running (not its configuration): systemd restarts it."""

    exit_code = 1


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
            model = SaliencyModel(path, provider=cfg.provider, threads=cfg.threads, engine=cfg.engine)
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
        host, port = cfg.host_port
        self.token, self.token_generated = self._token(cfg, host)
        from edge_saliency.serve_security import load_tls

        self.tls = load_tls(cfg.tls_cert, cfg.tls_key)
        source_open = True
        if source is None:
            source, source_open = self._open_source(cfg)
        self.engine = Engine(model, source, realtime=cfg.realtime, stale_after=cfg.stale_after, topk=cfg.topk,
                             class_index=class_index, health_stale=cfg.health_stale, loop=cfg.loop,
                             metrics=self.metrics)
        self._source_open = source_open
        self.streams = Streams(self.engine, self.make_renderer, self.views, cfg.jpeg_quality, cfg.stream_fps,
                               cfg.max_viewers, self.metrics)
        self.frames = self.streams.frames  # /api/frame.jpg, cached per frame and view
        self.jobs = ExplainJobs(model, queue_size=cfg.explain_queue, keep=cfg.jobs_kept, budget=cfg.explain_budget,
                                metrics=self.metrics, timeout=cfg.explain_timeout,
                                model_factory=self._explain_model_factory(model))
        try:
            self.server = DaemonHTTPServer((host, port), self, tls=self.tls)
        except OSError as exc:
            source.release()
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
        from edge_saliency.serve_security import generate_token, is_loopback

        if cfg.token or is_loopback(host):
            return cfg.token, False
        if cfg.generate_token:
            return generate_token(), True
        raise ConfigError(f"listen = {cfg.listen!r} serves the network without a token: set token (config file, "
                          "$EDGE_SALIENCY_TOKEN or a systemd credential), or generate_token = true to have one "
                          "made at start")

    def _open_source(self, cfg: Config):
        """(source, opened). Never a silent fallback to the demo under systemd: a configured (or, in a
        service, the default) camera that does not open now is retried by the capture."""
        from edge_saliency.sources import SourceError, make_source, open_source

        spec = cfg.source
        if spec is None and not self.notifier.enabled:
            return open_source(None, log_fn=log.warning), True  # interactive: camera 0, else the demo (said)
        if spec is None:
            spec = "0"
            log.warning("no source set in the config: using camera 0 (a service never falls back to the demo)")
        src = make_source(spec)
        try:
            src.open()
            return src, True
        except SourceError as exc:
            if src.kind not in LIVE_KINDS:
                raise
            log.error("%s: %s; serving anyway and retrying (health reports it)", src.describe(), exc)
            return src, False

    def _explain_model_factory(self, model):
        if self.cfg.explain_threads == 0 or not getattr(model, "path", None):
            return None
        from edge_saliency.model import SaliencyModel

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
        return f"{'https' if self.tls else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Daemon":
        self.engine.start(needs_open=not self._source_open)
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
        """name -> Engine: every inference loop the watchdog must see going round."""
        return {"default": self.engine}

    def alive(self, last_beats: dict) -> tuple[bool, str]:
        """(alive, why not): every inference loop went round since `last_beats` ({name: beats}) and
        HTTP answered recently. Whether frames are fresh does not matter (a camera that is gone is
        /healthz's business, and its capture retries)."""
        for name, eng in self.inference_loops().items():
            where = "" if name == "default" else f" ({name})"
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
        """WATCHDOG=1 only while the loop goes round and HTTP answers its self-probe; STATUS= too."""
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
            ok, reason = self.engine.health()
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


def _reload_on_sighup(event: threading.Event):
    """SIGHUP -> a flag the main loop acts on (never the default action, which kills the process)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return None
    return signal.signal(signal.SIGHUP, lambda signum, frame: event.set())


def cmd_serve(args) -> int:
    from edge_saliency.live import _Stop

    hup = threading.Event()
    old_hup = _reload_on_sighup(hup)  # before the slow start: a SIGHUP then must not kill us either
    cfg = load_config(Path(args.config) if args.config else None, cli=cli_values(args))
    level = getattr(logging, cfg.log_level.upper())
    logging.getLogger().setLevel(logging.DEBUG if getattr(args, "verbose", False) else level)
    try:
        daemon = Daemon(cfg)
    except (ConfigError, RuntimeFailure):
        raise
    except UserError as exc:  # a model, view, class or source that cannot work: a config problem
        raise ConfigError(str(exc)) from None
    stop = _Stop().install()
    try:
        daemon.start()
        if daemon.token_generated:  # printed once, here only (not logged)
            print(f"edge-saliency: generated token for this run: {daemon.token}", flush=True)
        log.info("serving %s | source: %s | model: %s on %s | views: %s", daemon.url, daemon.engine.source.describe(),
                 daemon.model.info.arch, daemon.model.provider, ", ".join(daemon.views))
        print(f"edge-saliency serving on {daemon.url}", flush=True)
        while not stop.flag.wait(0.5):
            if hup.is_set():
                hup.clear()
                daemon.reload()
            if daemon.engine.error:  # systemd restarts us (Restart=always)
                raise RuntimeFailure(f"inference loop failed: {daemon.engine.error}")
            if not daemon._http_thread.is_alive():
                raise RuntimeFailure("the HTTP server stopped")
    finally:
        t0 = time.perf_counter()
        daemon.stop()
        stop.restore()
        if old_hup is not None:
            signal.signal(signal.SIGHUP, old_hup)
        log.info("stopped (%s) in %.2f s", stop.reason or "exit", time.perf_counter() - t0)
    return 0
