"""The daemon's settings: one TOML file with every flag, CLI flags on top of it.

    cfg = load_config(Path("/etc/edge-saliency/config.toml"), cli={"listen": "0.0.0.0:8080"})
    cfg.listen, cfg.model, cfg.view ...

Keys are the `edge-saliency serve` flags with '_' for '-' (`--jpeg-quality` -> `jpeg_quality`),
all top-level (see deploy/config.example.toml). An unknown key, a table, a value of the wrong type
or out of range is rejected at start with the key named, as one line (UserError). The bearer token
may also come from $EDGE_SALIENCY_TOKEN, which wins over the file (keep secrets out of files you
share).
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Callable

from edge_saliency.serve.options import EX_CONFIG, ConfigError, Option, coerce, in_range, one_of  # noqa: F401

TOKEN_ENV = "EDGE_SALIENCY_TOKEN"


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080' | '[::1]:8080' | ':8080' (= 127.0.0.1) -> (host, port)."""
    m = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.\-]*)):(\d{1,5})", text.strip())
    if not m:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
    host = m.group(1) or m.group(2) or "127.0.0.1"
    port = int(m.group(3))
    if not 0 <= port <= 65535:
        raise ValueError("port must be 0..65535")
    return host, port


def _listen_check(v):
    try:
        parse_listen(v)
    except ValueError as exc:
        return str(exc)
    return None


def _token_check(v):
    if len(v) < 8:
        return "must be at least 8 characters"
    if any(c.isspace() for c in v) or not v.isprintable():
        return "must be printable, without spaces"
    return None


def _options() -> list[Option]:
    from edge_saliency.pipeline.render import COLORMAPS, VIEWS

    return [
        Option("model", str, None, "edge-saliency ONNX file (default: the pretrained EfficientNet-Lite0)", nullable=True),
        Option("source", str, None, "camera index or /dev/videoN, video file, image folder, rtsp:// URL, GStreamer "
               "pipeline, 'demo' or 'synthetic' (default: camera 0 if it opens, else demo)", nullable=True),
        Option("engine", str, "onnxruntime", "inference engine: onnxruntime, openvino, or auto (the faster here, "
               "probed once and cached)", one_of(["onnxruntime", "openvino", "auto"])),
        Option("provider", str, "auto", "ONNX Runtime execution provider: auto, cpu, cuda, tensorrt, ... "
               "(with engine openvino: the OpenVINO device, cpu by default)"),
        Option("threads", int, None, "ONNX Runtime intra-op threads (default: ORT's choice)", in_range(1, 256), nullable=True),
        Option("gpu_device", int, 0, "CUDA/TensorRT: the GPU's index", in_range(0, 64)),
        Option("trt_fp16", bool, False, "TensorRT: allow float16 kernels (faster; maps differ from fp32 by ~1e-3)"),
        Option("trt_workspace_mb", int, 1024, "TensorRT: the engine builder's workspace, MB", in_range(16, 1 << 20)),
        Option("trt_cache", str, None, "TensorRT: engine and timing cache folder (default: $CACHE_DIRECTORY/tensorrt "
               "under systemd, else the edge-saliency cache dir)", nullable=True),
        Option("realtime", bool, True, "play files and generated sources at their own FPS (false: every frame, "
               "as fast as inference goes)"),
        Option("loop", bool, True, "replay a finite source (video file, images) from the start when it ends"),
        Option("stale_after", float, None, "seconds without a frame before the camera counts as gone "
               "(default: max(1, 3/FPS))", in_range(0.05, 3600), nullable=True),
        Option("listen", str, "127.0.0.1:8080", "HOST:PORT of the HTTP API (port 0: any free port)", _listen_check),
        Option("token", str, None, f"bearer token required on every endpoint but /healthz (or ${TOKEN_ENV})",
               _token_check, nullable=True),
        Option("view", str, "fastcam", "default view of the page and of /stream.mjpg", one_of(VIEWS)),
        Option("alpha", float, 0.5, "map opacity over the frame, 0..1", in_range(0.0, 1.0)),
        Option("colormap", str, "jet", "OpenCV colour map for the map views", one_of(sorted(COLORMAPS))),
        Option("hud", bool, True, "draw labels, FPS and timings on the streamed frames"),
        Option("topk", int, 5, "classes in /api/latest and on the page", in_range(1, 100)),
        Option("class", str, None, "explain this class (name or index) instead of the top-1 (model exported "
               "with --class-input)", nullable=True),
        Option("jpeg_quality", int, 80, "JPEG quality of streamed frames, 1..100", in_range(1, 100)),
        Option("stream_fps", float, 15.0, "most frames per second sent to each stream (0: every processed frame)",
               in_range(0.0, 240.0)),
        Option("max_viewers", int, 32, "most concurrent /stream.mjpg viewers (more get 503)", in_range(1, 10000)),
        Option("max_body", int, 65536, "largest request body accepted, bytes (more get 413)", in_range(0, 16 << 20)),
        Option("health_stale", float, 3.0, "seconds without a processed frame before /healthz says 503",
               in_range(0.1, 3600)),
        Option("explain_queue", int, 4, "explain jobs waiting at most (more get 429)", in_range(1, 1000)),
        Option("explain_budget", int, 1000, "model queries per black-box explain job (decam, maskopt, rise)",
               in_range(2, 20_000)),
        Option("jobs_kept", int, 64, "finished explain jobs kept for GET /api/jobs/<id> (their results and maps, "
               "not their frames)", in_range(1, 1000)),
        *_security_options(),
        Option("access_log", bool, False, "log every HTTP request"),
        Option("log_level", str, "info", "debug, info, warning or error", one_of(("debug", "info", "warning", "error"))),
    ]


def _security_options() -> list[Option]:
    """Limits, TLS and explain isolation of `edge-saliency serve` (see serve/security.py)."""
    return [
        Option("max_connections", int, 64, "open HTTP connections at most (more are answered 503 and closed; "
               "also bounded by the file-descriptor limit)", in_range(4, 100000)),
        Option("max_client_connections", int, 16, "open HTTP connections from one client address at most "
               "(raise it behind a reverse proxy)", in_range(1, 100000)),
        Option("request_timeout", float, 15.0, "seconds a connection has to send a whole request (line, "
               "headers and body) once it waits for one; later ones get 408 and are closed", in_range(1.0, 300.0)),
        Option("max_header", int, 16384, "bytes of request line and headers at most (more get 431)",
               in_range(1024, 65536)),
        Option("allowed_hosts", str, None, "comma-separated extra Host names this server answers to "
               "(loopback names and the bound address always; '*' turns the check off; '*.example' a domain)",
               nullable=True),
        Option("generate_token", bool, False, "listening beyond loopback without a token: make a random one at "
               "start and print it once (otherwise such a start is refused)"),
        Option("session_hours", float, 12.0, "hours a browser login (signed session cookie) lasts",
               in_range(0.01, 24 * 90)),
        Option("tls_cert", str, None, "PEM certificate (chain) for HTTPS; reloaded on SIGHUP", nullable=True),
        Option("tls_key", str, None, "PEM private key for tls_cert", nullable=True),
        Option("explain_timeout", float, 60.0, "seconds an explain job may run before it is stopped",
               in_range(1.0, 3600.0)),
        Option("explain_threads", int, 1, "inference threads of the explain jobs' own model session, run at "
               "lower priority than the live loop (0: share the live model)", in_range(0, 64)),
    ]


OPTIONS: dict[str, Option] = {}

# Tables beside the top-level keys: name -> (default, parser(raw table, where, env=...) -> value). Their
# keys are checked like the top-level ones (check_table); the parsers live with what they configure.
TABLES: dict[str, tuple[Any, Callable[[dict, str], Any]]] = {}


def tables() -> dict[str, tuple[Any, Callable[[dict, str], Any]]]:
    if not TABLES:
        from edge_saliency.serve.cameras import parse_cameras_table
        from edge_saliency.serve.mqtt import parse_mqtt_table

        TABLES.update({"mqtt": (None, parse_mqtt_table), "cameras": ({}, parse_cameras_table)})
    return TABLES


def options() -> dict[str, Option]:
    if not OPTIONS:
        OPTIONS.update({o.name: o for o in _options()})
    return OPTIONS


class Config:
    """Attribute access to the merged settings (`cfg.jpeg_quality`, `cfg["class"]`)."""

    def __init__(self, values: dict, origin: dict):
        self._values = dict(values)
        self.origin = dict(origin)  # key -> "default" | file path | "command line" | "environment"

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self._values[name]

    def as_dict(self) -> dict:
        return dict(self._values)

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)


def read_file(path: str | os.PathLike) -> dict:
    """Parse a TOML config file (no checks of the keys yet)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading a TOML config needs Python 3.11+ (or `pip install tomli` on 3.10)") from None
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def check_secret_permissions(path: str | os.PathLike, what: str = "the token") -> None:
    """A config file that holds a secret (the token, the MQTT password) must not be readable by every
    user (refused), nor by its group (a warning)."""
    import logging
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        moves = ([f"the token to ${TOKEN_ENV} or a systemd credential"] if "token" in what else []) + \
            (["the password to $EDGE_SALIENCY_MQTT_PASSWORD"] if "MQTT" in what else [])
        raise ConfigError(f"{path} holds {what} and is readable by every user (mode {stat.S_IMODE(mode):04o}): "
                          f"chmod 600 {path}, or move {' and '.join(moves)}")
    if mode & stat.S_IRGRP:
        logging.getLogger("edge_saliency").warning("%s holds %s and is readable by its group (mode %04o); "
                                                   "chmod 600 it", path, what, stat.S_IMODE(mode))


def credential_token(env) -> tuple[str, str] | None:
    """(path, token) from systemd's LoadCredential=token:... ($CREDENTIALS_DIRECTORY/token), if there."""
    d = env.get("CREDENTIALS_DIRECTORY")
    if not d:
        return None
    p = Path(d) / "token"
    try:
        return str(p), p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def load_config(path: str | os.PathLike | None = None, cli: dict | None = None, env=None) -> Config:
    """Defaults < config file < credential `token` < $EDGE_SALIENCY_TOKEN (token only) < command-line flags."""
    opts = options()
    env = os.environ if env is None else env
    values = {name: o.default for name, o in opts.items()}
    origin = {name: "default" for name in opts}
    for name, (default, _) in tables().items():
        values[name], origin[name] = default, "default"
    if path is not None:
        raw = read_file(path)
        for key, value in raw.items():
            if key in tables():
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: {key!r} must be a table ([{key}]), got {value!r:.60}")
                values[key] = tables()[key][1](value, f"{path}: [{key}]", env=env)
                origin[key] = str(path)
                continue
            if key not in opts:
                what = "table" if isinstance(value, dict) else "key"
                close = difflib.get_close_matches(key.replace("-", "_").lower(), list(opts), n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{path}: unknown {what} {key!r}{hint}; known keys: {', '.join(opts)}")
            values[key] = coerce(opts[key], value, f"{path}: key {key!r}", from_text=False)
            origin[key] = str(path)
    if path is not None:
        secrets = [w for w, there in (("the token", "token" in raw),
                                      ("the MQTT password", isinstance(raw.get("mqtt"), dict)
                                       and raw["mqtt"].get("password") is not None)) if there]
        if secrets:
            check_secret_permissions(path, " and ".join(secrets))
    cred = credential_token(env)
    if cred is not None:
        values["token"] = coerce(opts["token"], cred[1], f"credential {cred[0]}", from_text=True)
        origin["token"] = "credential"
    token = env.get(TOKEN_ENV)
    if token is not None:
        values["token"] = coerce(opts["token"], token, f"${TOKEN_ENV}", from_text=True)
        origin["token"] = "environment"
    for key, value in (cli or {}).items():
        if key not in opts:
            raise ConfigError(f"unknown option {key!r}")
        flag = "--" + key.replace("_", "-")
        values[key] = coerce(opts[key], value, f"{flag}", from_text=True)
        origin[key] = "command line"
    return Config(values, origin)


def add_arguments(parser) -> None:
    """One flag per option, defaulting to 'not given' so the config file shows through."""
    import argparse

    for name, o in options().items():
        if name == "token":  # a secret on the command line shows in `ps`: file or environment only
            continue
        flag = "--" + name.replace("_", "-")
        dest = f"cfg_{name}"
        default = "auto" if o.default is None else o.default
        help_text = f"{o.help} (config key {name}; default: {default})"
        if o.kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def cli_values(args) -> dict:
    """The options given on the command line (argparse namespace -> {key: value})."""
    out = {}
    for name in options():
        dest = f"cfg_{name}"
        if hasattr(args, dest):
            v = getattr(args, dest)
            out[name] = ("true" if v else "false") if isinstance(v, bool) else v
    return out
