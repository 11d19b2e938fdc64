"""Every setting of `run`, `serve` and `bench`, declared once: name, type, default, help, check and
the commands that take it. The command-line flags and the TOML keys come from the same declaration:

    settings.add_flags(parser, "run")                     # --view, --alpha, --headless/--no-headless ...
    cfg = settings.resolve("run", args)                   # defaults < --config FILE < flags
    cfg.view, cfg.alpha, cfg["class"]

A flag is the key with '-' for '_' (`jpeg_quality` <-> `--jpeg-quality`); a bool has --x/--no-x.
An unknown key gets a "did you mean"; a key of another command says which command takes it. The
daemon's own config (serve/config.py) adds its tables ([mqtt], [cameras.NAME]), the token's
sources and the exit status 78 on top of this; the tables' keys are declared with `Option` too."""
from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge_saliency.errors import UserError


EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus= so a bad config is not restarted forever


class ConfigError(UserError):
    """A bad key or value in the config file or on the command line (names the key). Exit 78
    (EX_CONFIG), so that systemd does not restart a daemon whose configuration cannot work."""

    exit_code = EX_CONFIG


COMMANDS = ("run", "serve", "bench")


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # str, int, float, bool
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # value -> problem (None if fine)
    nullable: bool = False  # may be left unset (None): "automatic"
    commands: tuple = ("serve",)  # the commands that take it
    default_for: tuple = ()  # (command, default) pairs where a command's default differs
    flag: bool = True  # False: file or environment only (a secret shows in `ps`)
    false_flag: str | None = None  # another name for --no-<name> (run's --fast for --no-realtime)

    def default_in(self, command: str):
        return dict(self.default_for).get(command, self.default)

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")


def in_range(lo=None, hi=None):
    def check(v):
        if lo is not None and v < lo:
            return f"must be at least {lo}"
        if hi is not None and v > hi:
            return f"must be at most {hi}"
        return None
    return check


def one_of(choices):
    choices = tuple(choices)

    def check(v):
        return None if v in choices else f"must be one of: {', '.join(choices)}"
    return check


def coerce(opt: Option, value, where: str, from_text: bool, error=None):
    """A raw value (TOML-typed, or text from the command line) -> the option's type, checked.
    error: the exception class (ConfigError, exit 78, unless the caller says otherwise)."""
    original = value
    error = error or ConfigError

    def bad(why: str):
        v = original
        shown = repr(v) if not isinstance(v, str) or len(v) < 80 else repr(v[:77] + "...")
        return error(f"{where}: {why}, got {shown}")

    if value is None:
        if opt.nullable:
            return None
        raise bad("must be set")
    kind = opt.kind
    if from_text and isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                value = low in ("true", "1", "yes", "on")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = float(text)
        except ValueError:
            raise bad(f"must be {'true or false' if kind is bool else 'an integer' if kind is int else 'a number'}") from None
    if kind is bool and not isinstance(value, bool):
        raise bad("must be true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("must be an integer")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("must be a number")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("must be a finite number")
    if kind is str:
        if opt.name == "class" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise bad("must be a string")
        if opt.nullable and value == "" and opt.name != "token":
            return None
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            raise bad(problem)
    return value


def check_table(raw: dict, opts: dict[str, Option], where: str) -> dict:
    """A table's keys checked like the top-level ones: {key: value} with every option (defaults filled in)."""
    out = {name: o.default for name, o in opts.items()}
    for key, value in raw.items():
        if key not in opts:
            raise did_you_mean(key, value, list(opts), where, ConfigError)
        out[key] = coerce(opts[key], value, f"{where} key {key!r}", from_text=False)
    return out


def did_you_mean(key: str, value, known: list[str], where: str, error=ConfigError) -> UserError:
    what = "table" if isinstance(value, dict) else "key"
    close = difflib.get_close_matches(key.replace("-", "_").lower(), known, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return error(f"{where}: unknown {what} {key!r}{hint}; known keys: {', '.join(known)}")


# ---------------------------------------------------------------------- the table
RUN, SERVE, BENCH = ("run",), ("serve",), ("bench",)
LIVE = ("run", "serve")
ALL = COMMANDS
TOKEN_ENV = "EDGE_SALIENCY_TOKEN"


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080' | '[::1]:8080' | ':8080' (= 127.0.0.1) -> (host, port)."""
    import re

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


def _comma_list(item_check=None, kind=str):
    """A comma-separated list (bench sweeps several values): each item converted and checked."""
    def check(v):
        items = [x.strip() for x in v.split(",") if x.strip()]
        if not items:
            return "must name at least one value"
        for x in items:
            try:
                x = kind(x)
            except ValueError:
                return f"wants comma-separated {'integers' if kind is int else 'values'}"
            problem = item_check(x) if item_check else None
            if problem:
                return f"{x!r} {problem}" if kind is str else problem
        return None
    return check


def _declarations() -> list[Option]:
    from edge_saliency.contract import PRECISIONS
    from edge_saliency.pipeline.render import COLORMAPS, VIEWS
    from edge_saliency.runtime.engines import ENGINES

    return [
        # ------------------------------------------------ the model and where it runs (run, serve, bench)
        Option("model", str, None, "edge-saliency ONNX file (default: the pretrained EfficientNet-Lite0, exported "
               "on first use)", nullable=True, commands=ALL),
        Option("engine", str, "onnxruntime", "inference engine: onnxruntime, openvino (pip install "
               "'edge-saliency[openvino]'), or auto (the faster here, probed once per model and machine and cached)",
               one_of([*ENGINES, "auto"]), commands=LIVE),
        Option("provider", str, "auto", "ONNX Runtime execution provider: auto (CUDA if present, else CPU; TensorRT "
               "only when asked for), cpu, cuda, tensorrt, ...; a comma list is a fallback order (with engine "
               "openvino: the OpenVINO device, cpu by default)", commands=LIVE),
        Option("threads", int, None, "intra-op threads (default: the engine's choice)", in_range(1, 256),
               nullable=True, commands=LIVE),
        Option("engine", str, None, "engines to compare, comma-separated: onnxruntime,openvino (default: every "
               "engine installed here)", _comma_list(one_of([*ENGINES, "all"])), nullable=True, commands=BENCH),
        Option("provider", str, None, "ONNX Runtime providers to compare, comma-separated: cpu,cuda,... (default: "
               "every provider available here)", nullable=True, commands=BENCH),
        Option("threads", str, None, "intra-op threads to compare, comma-separated, e.g. 1,2,4 (default: all "
               "cores)", _comma_list(in_range(1, 256), int), nullable=True, commands=BENCH),
        Option("gpu_device", int, 0, "CUDA/TensorRT: the GPU's index", in_range(0, 64), commands=ALL),
        Option("trt_fp16", bool, False, "TensorRT: allow float16 kernels (faster; maps differ from fp32 by ~1e-3)",
               commands=ALL),
        Option("trt_workspace_mb", int, 1024, "TensorRT: the engine builder's workspace, MB", in_range(16, 1 << 20),
               commands=ALL),
        Option("trt_cache", str, None, "TensorRT: engine and timing cache folder (default: $CACHE_DIRECTORY/tensorrt "
               "under systemd, else the edge-saliency cache dir)", nullable=True, commands=ALL),
        # ------------------------------------------------ the source (run, serve)
        Option("source", str, None, "camera index or /dev/videoN, video file, image file or folder, rtsp:// or "
               "http:// URL, GStreamer pipeline ending in appsink, 'demo' or 'synthetic' (default: camera 0 if it "
               "opens, else demo)", nullable=True, commands=LIVE),
        Option("realtime", bool, True, "play files and generated sources at their own FPS, dropping frames the loop "
               "cannot keep up with (--fast / false: every frame, as fast as inference goes; run's default: realtime "
               "with a window, fast headless)", nullable=True, commands=LIVE, default_for=(("run", None),),
               false_flag="--fast"),
        Option("loop", bool, True, "replay a finite source (video file, images) from the start when it ends",
               commands=SERVE),
        Option("stale_after", float, None, "seconds without a frame before the camera counts as gone (default: "
               "max(1, 3/FPS))", in_range(0.05, 3600), nullable=True, commands=LIVE),
        # ------------------------------------------------ what is drawn (run, serve)
        Option("view", str, "fastcam", "the view shown (run) or streamed by default (serve): " + " | ".join(VIEWS),
               one_of(VIEWS), commands=LIVE),
        Option("alpha", float, 0.5, "map opacity over the frame, 0..1", in_range(0.0, 1.0), commands=LIVE),
        Option("colormap", str, "jet", "OpenCV colour map for the map views", one_of(sorted(COLORMAPS)),
               commands=LIVE),
        Option("hud", bool, True, "draw labels, FPS and timings on the frames", commands=LIVE),
        Option("topk", int, 5, "classes in the HUD, /api/latest and on the page", in_range(1, 100), commands=LIVE,
               default_for=(("run", 3),)),
        Option("class", str, None, "explain this class (name or index) instead of the top-1 (model exported "
               "with --class-input)", nullable=True, commands=LIVE),
        # ------------------------------------------------ run: where the overlay goes and for how long
        Option("headless", bool, False, "no window (automatic when there is no display)", commands=RUN),
        Option("record", str, None, "write the overlay video (.mp4, .avi, .mov, .mkv)", nullable=True, commands=RUN),
        Option("log_json", str, None, "one JSON line per frame: id, timestamps, class, score, salient box and "
               "centroid", nullable=True, commands=RUN),
        Option("contact_sheet", str, None, "PNG grid of a few frames spread over the run", nullable=True,
               commands=RUN),
        Option("max_frames", int, None, "stop after N processed frames", in_range(1), nullable=True, commands=RUN),
        Option("duration", float, None, "stop after S seconds", in_range(0.001), nullable=True, commands=RUN),
        # ------------------------------------------------ serve: the daemon
        Option("listen", str, "127.0.0.1:8080", "HOST:PORT of the HTTP API (port 0: any free port)", _listen_check),
        Option("token", str, None, f"bearer token required on every endpoint but /healthz (or ${TOKEN_ENV})",
               _token_check, nullable=True, flag=False),
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
        # limits, TLS and explain isolation (serve/security.py)
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
        Option("access_log", bool, False, "log every HTTP request"),
        Option("log_level", str, "info", "debug, info, warning or error", one_of(("debug", "info", "warning", "error"))),
        # ------------------------------------------------ bench: what is measured
        Option("precision", str, None, "precisions to compare, comma-separated: " + ",".join(PRECISIONS) + " (default: "
               "fp32 and int8, fp16 on GPU providers)", _comma_list(one_of(PRECISIONS)), nullable=True, commands=BENCH),
        Option("runs", int, 300, "measured frames per variant", in_range(10), commands=BENCH),
        Option("warmup", int, 20, "warm-up frames per variant", in_range(0), commands=BENCH),
        Option("plain", bool, True, "also measure the plain model (no saliency) as the baseline", commands=BENCH),
        Option("batch", int, None, "also measure throughput (images/s) with batches of N frames, MLPerf "
               "Offline-style, next to the single-stream latency", in_range(1, 1024), nullable=True, commands=BENCH),
        Option("accuracy", bool, True, "top-1 agreement and map correlation of each variant with fp32",
               commands=BENCH),
        Option("cache", str, None, "where variants are made (default: the edge-saliency cache dir)", nullable=True,
               commands=BENCH),
        Option("json", str, None, "write every number (and the raw latencies) to this file", nullable=True,
               commands=BENCH),
        Option("plot", str, None, "write a PNG of the latency distributions (needs matplotlib)", nullable=True,
               commands=BENCH),
        Option("progress", bool, False, "progress bar even when stderr is not a terminal", commands=BENCH),
        Option("image", str, None, "benchmark on this image (default: scikit-image's cat photograph)",
               nullable=True, commands=BENCH),
    ]


# ---------------------------------------------------------------------- reading the table
_TABLE: list[Option] = []


def table() -> list[Option]:
    """Every declared setting (a name may be declared twice for disjoint commands: bench's lists)."""
    if not _TABLE:
        decl = _declarations()
        seen = set()
        for o in decl:
            for c in o.commands:
                assert (c, o.name) not in seen, f"{o.name} declared twice for {c}"
                seen.add((c, o.name))
        _TABLE.extend(decl)
    return _TABLE


def for_command(command: str) -> dict[str, Option]:
    return {o.name: o for o in table() if command in o.commands}


class Settings:
    """Attribute access to the merged settings (`cfg.jpeg_quality`, `cfg["class"]`) and where each
    came from (`origin[key]`: "default" | a file path | "command line" | "environment" | "credential")."""

    def __init__(self, values: dict, origin: dict, command: str = ""):
        self._values = dict(values)
        self.origin = dict(origin)
        self.command = command

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


def unknown_key(key: str, value, command: str, where: str, error=ConfigError, extra=()) -> UserError:
    """The error for a key `command` does not take: a close match, or the command that takes it."""
    known = list(for_command(command)) + list(extra)
    norm = key.replace("-", "_").lower()
    others = [c for c in COMMANDS if c != command and norm in for_command(c)]
    if others and norm not in known:
        return error(f"{where}: {key!r} is a setting of {' and '.join(others)}, not of {command}")
    return did_you_mean(key, value, known, where, error)


def read_file(path: str | os.PathLike, error=ConfigError) -> dict:
    """Parse a TOML settings file (its keys are checked by the caller)."""
    import tomllib

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise error(f"config file {path} is a directory") from None
    except OSError as exc:
        raise error(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def defaults(command: str) -> tuple[dict, dict]:
    opts = for_command(command)
    return {n: o.default_in(command) for n, o in opts.items()}, {n: "default" for n in opts}


def apply_file(values: dict, origin: dict, raw: dict, command: str, path, error=ConfigError, skip=()) -> None:
    """The file's keys (but those in `skip`: the caller's tables) checked and laid over `values`."""
    opts = for_command(command)
    for key, value in raw.items():
        if key in skip:
            continue
        if key not in opts:
            raise unknown_key(key, value, command, str(path), error, extra=skip)
        values[key] = coerce(opts[key], value, f"{path}: key {key!r}", from_text=False, error=error)
        origin[key] = str(path)


def apply_cli(values: dict, origin: dict, given: dict, command: str, error=ConfigError) -> None:
    """Flags over the rest: values argparse converted already, or text (serve converts here)."""
    opts = for_command(command)
    for key, value in given.items():
        if key not in opts:
            raise error(f"unknown option {key!r}")
        values[key] = coerce(opts[key], value, opts[key].flag_name, from_text=isinstance(value, str), error=error)
        origin[key] = "command line"


def resolve(command: str, args, error=UserError) -> Settings:
    """run/bench: defaults < --config FILE (TOML, the same keys) < the flags given."""
    values, origin = defaults(command)
    path = getattr(args, "config", None)
    if path:
        apply_file(values, origin, read_file(path, error), command, path, error)
    apply_cli(values, origin, given(args, command), command, error)
    return Settings(values, origin, command)


# ---------------------------------------------------------------------- flags
def add_flags(parser, command: str, convert: bool = True) -> None:
    """One flag per setting of `command`, defaulting to 'not given' so a config file shows through.
    convert: check values while parsing (an error is argparse's one line and exit 2); serve checks
    them with its file instead (exit 78, so systemd does not restart a daemon that cannot work)."""
    groups = {}
    for name, o in for_command(command).items():
        if not o.flag:
            continue
        dest = f"cfg_{name}"
        default = o.default_in(command)
        shown = "auto" if default is None else ("true" if default is True else "false" if default is False else default)
        help_text = (f"{o.help} (key {name})" if "(default" in o.help else
                     f"{o.help} (key {name}; default: {shown})").replace("%", "%%")
        g = parser
        if name.startswith(("gpu_", "trt_")):
            g = groups.get("gpu") or groups.setdefault("gpu", parser.add_argument_group("CUDA / TensorRT (onnxruntime-gpu)"))
        if o.kind is bool:
            g.add_argument(o.flag_name, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_text)
            if o.false_flag:
                g.add_argument(o.false_flag, dest=dest, action="store_false", default=argparse.SUPPRESS,
                               help=f"the same as --no-{name.replace('_', '-')}")
        else:
            g.add_argument(o.flag_name, dest=dest, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text,
                           type=_argument_type(o) if convert else None)


def _argument_type(o: Option):
    def convert(text: str):
        try:
            return coerce(o, text, o.flag_name, from_text=True, error=UserError)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{o.flag_name}: ")) from None
    convert.__name__ = o.kind.__name__  # argparse names the type in some messages
    return convert


def given(args, command: str) -> dict:
    """The settings given as flags (argparse namespace -> {key: value})."""
    out = {}
    for name in for_command(command):
        dest = f"cfg_{name}"
        if hasattr(args, dest):
            out[name] = getattr(args, dest)
    return out
