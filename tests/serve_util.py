"""Helpers for the serve tests: an in-process daemon on 127.0.0.1:<ephemeral>, a source that can be
killed and revived, HTTP over raw sockets, and an MJPEG reader."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np

from edge_saliency.pipeline.capture import Capture
from waiting import PATIENCE_S, wait_for  # noqa: F401  (re-exported for the serve tests)
from edge_saliency.serve.config import load_config
from edge_saliency.pipeline.sources import SourceError, SyntheticSource


class Pluggable:
    """Mixed in before a generated source: its device can be unplugged (`plug.clear()`: reads fail,
    reopening raises) and plugged back in (`plug.set()`)."""

    def __init__(self, spec, fps, size, plug=None):
        super().__init__(spec, fps, size)
        self.plug = plug if plug is not None else threading.Event()
        if plug is None:
            self.plug.set()

    def clone(self):
        c = super().clone()
        c.plug = self.plug  # the clone is the same device
        return c

    def open(self):
        if not self.plug.is_set():
            raise SourceError(f"{self.describe()} unplugged")
        super().open()

    def read(self):
        return super().read() if self.plug.is_set() else None


class Switchable(Pluggable, SyntheticSource):
    """A synthetic camera that can be unplugged and plugged back in."""

    kind = "switchable"

    def __init__(self, spec="switchable", fps=30.0, size=(320, 240), plug=None):
        super().__init__(spec, fps, size, plug)

    def describe(self):
        return "switchable camera"


class RecordingNotifier:
    """Collects sd_notify messages instead of sending them."""

    def __init__(self, watchdog_usec=200_000):
        self.watchdog_usec = watchdog_usec
        self.messages: list[str] = []

    enabled = True

    @property
    def watchdog_interval(self):
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def send(self, m):
        self.messages.append(m)
        return True

    def ready(self, status=None):
        return self.send("READY=1")

    def watchdog(self):
        return self.send("WATCHDOG=1")

    def status(self, text):
        return self.send(f"STATUS={text}")

    def stopping(self):
        return self.send("STOPPING=1")

    def close(self):
        pass


def start_daemon(model, source=None, notifier=None, fast_backoff=True, tables=None, sources=None, **settings):
    """tables: {"mqtt": {...}, "cameras": {...}} as the TOML tables would be; sources: {camera: opened source}."""
    from edge_saliency.serve.config import tables as table_parsers
    from edge_saliency.serve.daemon import Daemon

    cli = {"listen": "127.0.0.1:0", "stream_fps": "10", "explain_budget": "30", "health_stale": "1.5"}
    cli.update({k: str(v) for k, v in settings.items() if k != "token"})
    env = {"EDGE_SALIENCY_TOKEN": settings["token"]} if "token" in settings else {}
    cfg = load_config(None, cli=cli, env=env)
    for name, raw in (tables or {}).items():
        cfg._values[name] = table_parsers()[name][1](raw, f"[{name}]")
    if source is None and not (tables or {}).get("cameras"):
        source = SyntheticSource("synthetic", fps=30.0, size=(640, 480))
        source.open()
    d = Daemon(cfg, model=model, source=source, notifier=notifier or RecordingNotifier(None), sources=sources)
    if fast_backoff:
        for cam in d.cameras.values():
            cam.loop.capture_factory = partial(Capture, backoff=(0.05, 0.2))
    return d.start()


@contextlib.contextmanager
def running(model, **kw):
    d = start_daemon(model, **kw)
    try:
        yield d
    finally:
        d.stop()


def request(daemon, method, path, body=None, headers=None, timeout=30):
    """(status, headers dict (lower-case), body bytes)."""
    host, port = daemon.address
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(daemon, path, headers=None):
    status, h, body = request(daemon, "GET", path, headers=headers)
    assert h["content-type"] == "application/json", (path, h)
    return status, json.loads(body)


def raw(daemon, data: bytes, timeout=10) -> tuple[int, bytes]:
    """Send raw bytes, return (status, whole response) (status 0: the connection closed silently)."""
    host, port = daemon.address
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not c:
                break
            chunks.append(c)
    resp = b"".join(chunks)
    try:
        return int(resp.split(b" ", 2)[1]), resp
    except (IndexError, ValueError):
        return 0, resp


class MjpegReader:
    """Reads a multipart/x-mixed-replace response part by part."""

    def __init__(self, daemon, path="/stream.mjpg", headers=None, timeout=20, rcvbuf=None):
        host, port = daemon.address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{hdrs}\r\n".encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        ctype = self.headers.get("content-type", "")
        self.boundary = ctype.split("boundary=")[1] if "boundary=" in ctype else None

    def _fill(self):
        c = self.sock.recv(65536)
        if not c:
            raise EOFError("stream closed")
        self.buf += c

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def part(self) -> tuple[dict, bytes]:
        """(part headers, JPEG bytes) of the next part; checks the boundary line and the CRLF after."""
        line = self._until(b"\r\n")
        while line == b"":  # tolerate blank lines between parts
            line = self._until(b"\r\n")
        assert line == f"--{self.boundary}".encode(), line[:80]
        head = self._until(b"\r\n\r\n").decode("latin-1")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head.split("\r\n") if ln)}
        data = self._exactly(int(headers["content-length"]))
        assert self._exactly(2) == b"\r\n"
        return headers, data

    def close(self):
        self.sock.close()


def decode_jpeg(data: bytes):
    import cv2

    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a complete JPEG"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def metric_value(text: str, name: str, labels: dict | None = None) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return s.value
    return None


# ---------------------------------------------------------------- `edge-saliency serve` as a process
ROOT = Path(__file__).resolve().parents[1]


def env_for(extra=None):
    """The environment of a CLI subprocess: no display, no systemd, no token, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "NOTIFY_SOCKET",
                                                              "WATCHDOG_USEC", "WATCHDOG_PID", "EDGE_SALIENCY_TOKEN")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    env.update(extra or {})
    return env


def serve(args, tmp_path, extra_env=None):
    """`edge-saliency serve ARGS` in tmp_path, to the end (config errors, --help ...)."""
    return subprocess.run([sys.executable, "-m", "edge_saliency", "serve", *args], cwd=tmp_path, env=env_for(extra_env),
                          capture_output=True, text=True, timeout=PATIENCE_S)  # a guard against a hang


def serve_config_error(tmp_path, toml: str, mode: int | None = None) -> str:
    """`serve --config` on this TOML (file mode `mode`) must refuse to start: exit 78 (EX_CONFIG, so
    systemd does not restart it, issue-16) and one line on stderr, no traceback. Returns the line."""
    (tmp_path / "c.toml").write_text(toml)
    if mode is not None:
        (tmp_path / "c.toml").chmod(mode)
    p = serve(["--config", "c.toml"], tmp_path)
    assert p.returncode == 78, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]
