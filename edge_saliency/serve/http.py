"""The daemon's HTTP API on one port (stdlib ThreadingHTTPServer: no dependency, one thread per
connection, which is what long-lived MJPEG viewers need).

    GET  /                      web page: live overlay, top-k, FPS, latency, view switcher
    GET  /stream.mjpg?view=V    MJPEG (multipart/x-mixed-replace) of the overlay in view V
    GET  /api/latest            JSON of the newest result
    GET  /api/history           per-second FPS, latency p50/p99 and class over the last minutes
    GET  /api/frame.jpg?view=V  the newest frame as JPEG (view raw by default)
    GET  /api/map.png?map=M     the newest saliency map (smoe | recipro | fastcam), 8-bit PNG
    POST /api/explain           {"method": ..., "class": ..., "camera": ...} -> 202 {"job": id}
    GET  /api/jobs/<id>         a job's state and result; /api/jobs/<id>/map.png its map
    GET  /metrics               Prometheus text
    GET  /healthz               200 while frames are fresh, 503 with the reason
    GET  /api/cameras           the cameras (several per daemon: [cameras.NAME] in the config)
    GET  /cameras/NAME/ (page), /cameras/NAME/stream.mjpg, /api/cameras/NAME/latest | frame.jpg | map.png:
                                the same per camera
                                (the plain URLs above are the default camera's)

Security: an optional bearer token guards everything but /healthz (header `Authorization: Bearer
T`, or the signed session cookie that `/?token=T` sets for browsers); no endpoint reads or writes
a path a request names; bodies over `max_body` get 413; anything malformed gets a 4xx; an
unexpected error in one request is logged and answered 500, and the server goes on. Connection
caps, the whole-request deadline, the header cap, Host/Origin checks, login throttling and TLS
are in serve/security.py (hooked in by `DaemonHTTPServer.get_request/process_request` and
`Handler.handle_one_request/_guard/_authorised`).
"""
from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2

from edge_saliency.pipeline.render import normalise_for_display
from edge_saliency.serve.jobs import JobRejected
from edge_saliency.serve.page import render_page
from edge_saliency.serve.security import (ACCEPT_ERRNOS, FRAME_ANCESTORS, SECURITY_HEADERS, AcceptBackoff, Conn,
                                          ConnectionLimits, Deadlines, HostPolicy, LoginThrottle, RateLimitedLog,
                                          Refused, Sessions, content_length, read_head, refuse_connection)
from edge_saliency.serve.streams import BOUNDARY

log = logging.getLogger("edge_saliency")

COOKIE = "edge_saliency_session"
JOB_PATH = re.compile(r"/api/jobs/([0-9a-f]{16})(/map\.png)?")
CAMERA_PATH = re.compile(r"/(?:cameras/([A-Za-z0-9_-]{1,32})/(stream\.mjpg|)|api/cameras/([A-Za-z0-9_-]{1,32})/"
                         r"(latest|history|frame\.jpg|map\.png))")
MAPS = ("smoe", "recipro", "fastcam")
SEND_TIMEOUT = 10.0  # a viewer that takes nothing for this long is dropped


class BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class DaemonHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, app, tls=None):
        self.app = app
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        self._setup_guards(app, host, tls)
        super().__init__(address, Handler)
        self.deadlines.start()

    # ------------------------------------------------------------------ guards (serve/security.py)
    def _setup_guards(self, app, host: str, tls) -> None:
        cfg = app.cfg
        self.tls = tls
        self.limits = ConnectionLimits(cfg.max_connections, cfg.max_client_connections, app.metrics)
        self.deadlines = Deadlines()
        self.request_timeout = cfg.request_timeout
        self.max_header = cfg.max_header
        self.hosts = HostPolicy(host, (cfg.allowed_hosts or "").split(","))
        token = getattr(app, "token", None) or cfg.token
        self.sessions = Sessions(token, cfg.session_hours * 3600) if token else None
        self.throttle = LoginThrottle()
        self.backoff = AcceptBackoff()
        self.refusals = RateLimitedLog(5.0)

    def get_request(self):
        """accept(), backing off on EMFILE/ENFILE instead of spinning; TLS wrapping (the handshake
        happens in the connection's own thread, under the request deadline)."""
        try:
            sock, addr = self.socket.accept()
        except OSError as exc:
            if exc.errno in ACCEPT_ERRNOS:
                self.backoff.failed(exc)
            raise
        self.backoff.ok()
        if self.tls is not None:
            sock = self.tls.wrap(sock)
        return sock, addr

    def process_request(self, request, client_address):
        """Admit under the connection caps (or answer 503 and close), then one thread per connection."""
        ip = client_address[0]
        reason = self.limits.admit(ip, evict=lambda: self.deadlines.evict_oldest_waiting(self.request_timeout))
        if reason is not None:
            refuse_connection(request, reason)
            return
        conn = Conn(request, ip)
        try:
            threading.Thread(target=self._serve_connection, args=(conn, request, client_address),
                             name="http-conn", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had (TasksMax): refuse like a cap
            self.limits.release(ip)
            log.warning("refused a connection from %s: cannot start a thread (%s)", ip, exc)
            refuse_connection(request, str(exc))

    def _serve_connection(self, conn, request, client_address):
        self.deadlines.add(conn)
        try:
            Handler(request, client_address, self, conn)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.deadlines.remove(conn)
            self.shutdown_request(request)
            self.limits.release(conn.ip)

    def server_close(self):
        self.deadlines.stop()
        super().server_close()

    def handle_error(self, request, client_address):  # one log line, not a traceback on stderr
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        if isinstance(exc, ssl.SSLError):
            log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        log.warning("HTTP connection from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls
    server_version = "edge-saliency"
    sys_version = ""
    timeout = 30  # idle keep-alive connections close after this
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s", "status": %(code)d}'

    def __init__(self, request, client_address, server, conn=None):
        self.conn = conn if conn is not None else Conn(request, client_address[0])
        self._csp_sent = False
        super().__init__(request, client_address, server)

    # ------------------------------------------------------------------ request intake (serve/security.py)
    def setup(self):
        self.conn.deadline = time.monotonic() + self.server.request_timeout
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()  # an SSLError ends the connection (logged at debug)
        super().setup()

    def handle_one_request(self):
        """The stdlib's, with the request line and headers read under one byte cap and one deadline."""
        conn = self.conn
        conn.deadline = time.monotonic() + self.server.request_timeout
        self._csp_sent = False
        try:
            head = read_head(self.rfile, self.server.max_header)
        except Refused as r:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.close_connection = True
            if r.status == 408 and not conn.expired:
                return  # the client closed mid-request: nobody to answer
            if conn.evicted:
                self._log_evicted()
                return
            if r.status == 408:
                self.server.refusals(f"slow:{conn.ip}", logging.WARNING, "%s: request not complete within %g s "
                                     "(request_timeout): closed", conn.ip, self.server.request_timeout)
            else:
                self.server.refusals(f"head:{conn.ip}", logging.WARNING, "%s: %s: refused", conn.ip, r.message)
            conn.deadline = None
            self.send_error(r.status, r.message)
            return
        except (TimeoutError, socket.timeout, ConnectionError, ssl.SSLError):
            self.close_connection = True
            return
        if head is None:  # closed (or idle past the deadline) between requests
            self.close_connection = True
            if conn.evicted:
                self._log_evicted()
            return
        self.raw_requestline, block = head
        real = self.rfile
        self.rfile = io.BytesIO(block)
        try:
            ok = self.parse_request()
        finally:
            self.rfile = real
        if not ok:
            return
        method = getattr(self, "do_" + self.command, None) if self.command.isalpha() else None
        if method is None:
            self.send_error(405)
            return
        method()
        self.wfile.flush()

    def _log_evicted(self):
        self.server.refusals(f"evict:{self.conn.ip}", logging.INFO, "%s: closed a connection that had sent no "
                             "complete request, to make room at max_connections = %d", self.conn.ip,
                             self.server.limits.max_total)

    def _request_read(self):
        """The whole request is in: from here on no read deadline (a stream may last for hours)."""
        self.conn.deadline = None

    def _guard(self, method: str) -> int | None:
        """Host/Origin checks and the strict Content-Length; the body length (None: no body)."""
        self.server.hosts.check(self.headers, method, self.request_version)
        return content_length(self.headers)

    def _refuse(self, r: Refused) -> None:
        if r.log_line:
            self.server.refusals(f"{r.status}:{self.conn.ip}:{r.log_line[:40]}", r.level, "%s: %s",
                                 self.conn.ip, r.log_line)
        if r.status in (400, 411, 413, 431) or self.headers.get("Content-Length") not in (None, "0"):
            self.close_connection = True
        self._json(r.status, {"error": r.message, "status": r.status}, r.headers)

    def send_header(self, keyword, value):
        if keyword.lower() == "content-security-policy":
            self._csp_sent = True
        super().send_header(keyword, value)

    def end_headers(self):
        for k, v in SECURITY_HEADERS.items():
            super().send_header(k, v)
        if not self._csp_sent:
            super().send_header("Content-Security-Policy", FRAME_ANCESTORS)
        super().end_headers()

    # ------------------------------------------------------------------ plumbing
    @property
    def app(self):
        return self.server.app

    def log_message(self, fmt, *args):
        if self.app.cfg.access_log:
            log.info("%s %s", self.address_string(), fmt % args)

    def log_request(self, code="-", size="-"):
        """Access log without the query string (it may carry ?token=)."""
        headers = getattr(self, "headers", None)
        probe = headers is not None and headers.get("User-Agent") == "edge-saliency-watchdog"
        if self.app.cfg.access_log and not probe:  # the watchdog's self-probe every second is not logged
            path = urlsplit(getattr(self, "path", "") or "").path[:200]
            log.info('%s "%s %s %s" %s %s', self.address_string(), getattr(self, "command", "") or "-",
                     path or "-", getattr(self, "request_version", "") or "-", getattr(code, "value", code), size)

    def log_error(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def send_error(self, code, message=None, explain=None):
        # the stdlib answers unknown methods with 501 and HTTP/2+ request lines with 505: those are
        # the client's mistakes, so they get 4xx here
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {getattr(self, 'command', '?')!r} not allowed"
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code, message = HTTPStatus.BAD_REQUEST, "unsupported HTTP version"
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a status line even for garbage request lines
        self.app.metrics.http.labels(str(int(code))).inc()
        message = (message or HTTPStatus(code).phrase).replace("\\", "\\\\").replace('"', '\\"')
        message = "".join(c if c.isprintable() else "?" for c in message)[:300]
        super().send_error(code, message, explain)

    def __getattr__(self, name):
        if name.startswith("do_"):  # any other method: 405
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self):
        self._discard_body()
        self._fail(BadRequest(405, f"method {self.command} not allowed", {"Allow": "GET, HEAD, POST"}))

    def _reply(self, status: int, body: bytes, ctype: str, headers: dict | None = None, head: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.app.metrics.http.labels(str(status)).inc()

    def _json(self, status: int, data, headers: dict | None = None):
        self._reply(status, json.dumps(data).encode("utf-8"), "application/json", headers,
                    head=self.command == "HEAD")

    def _fail(self, exc: BadRequest):
        self._json(exc.status, {"error": exc.message, "status": exc.status}, exc.headers)

    def _discard_body(self):
        """Unread body bytes would be taken for the next request: close the connection instead."""
        if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    # ------------------------------------------------------------------ methods
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str):
        try:
            try:
                self._body_length = self._guard(method)
                if method != "POST":
                    self._request_read()
            except Refused as r:
                self._request_read()
                return self._refuse(r)
            if len(self.path) > 2048:
                raise BadRequest(414, "URL too long")
            parts = urlsplit(self.path)
            path = parts.path
            if not path.startswith("/"):
                raise BadRequest(400, "request target must be a path")
            try:
                query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20,
                                 errors="strict")
            except (ValueError, UnicodeDecodeError):
                raise BadRequest(400, "malformed query string") from None
            if path != "/healthz" and not self._authorised(path, query):
                self._discard_body()
                raise BadRequest(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="edge-saliency"'})
            if method == "POST":
                if path != "/api/explain":
                    self._discard_body()
                    raise BadRequest(405 if path in GET_ROUTES else 404,
                                     f"POST not allowed on {path}" if path in GET_ROUTES else "no such endpoint",
                                     {"Allow": "GET, HEAD"} if path in GET_ROUTES else None)
                return self._explain(query)
            route = GET_ROUTES.get(path)
            if route is None and CAMERA_PATH.fullmatch(path):
                return self._camera_route(CAMERA_PATH.fullmatch(path), query)
            if route is None:
                m = JOB_PATH.fullmatch(path)
                if path == "/api/explain":
                    self._discard_body()
                    raise BadRequest(405, "use POST for /api/explain", {"Allow": "POST"})
                if m is None:
                    self._discard_body()
                    raise BadRequest(404, "no such endpoint")
                return self._job(m.group(1), bool(m.group(2)), query)
            self._discard_body()
            return route(self, query)
        except BadRequest as exc:
            self._request_read()
            self._fail(exc)
        except Refused as r:
            self._request_read()
            self._refuse(r)
        except _Handled:
            pass
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # a bug: logged, answered 500, the server goes on
            log.exception("error answering %s %s: %s", self.command, urlsplit(self.path).path[:200], exc)
            self.close_connection = True
            try:
                self._json(500, {"error": f"internal error: {type(exc).__name__}", "status": 500})
            except Exception:
                pass

    # ------------------------------------------------------------------ auth (serve/security.py)
    def _authorised(self, path: str, query: dict) -> bool:
        """Bearer token, or a valid signed session cookie; `/?token=T` trades the token for a cookie.
        Wrong tokens are logged at warning and throttled per client (429 while locked out)."""
        token = getattr(self.app, "token", None) or self.app.cfg.token
        if not token:
            return True
        ip = self.conn.ip
        throttle = self.server.throttle
        wait = throttle.locked_for(ip)
        if wait > 0:
            raise Refused(429, "too many failed logins from this address; retry later", None,
                          {"Retry-After": str(int(wait) + 1)})
        want = token.encode("utf-8")
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            if hmac.compare_digest(auth[7:].strip().encode("utf-8", "replace"), want):
                throttle.succeeded(ip)
                return True
            throttle.failed(ip, "wrong bearer token")
            return False
        cookie = None
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                cookie = value
        if cookie is not None and self.server.sessions.valid(cookie):
            return True
        if path == "/" and "token" in query:  # a browser's way in: a session cookie, then / without the token
            if hmac.compare_digest(query["token"][-1].encode("utf-8", "replace"), want):
                throttle.succeeded(ip)
                secure = "; Secure" if self.server.tls is not None else ""
                max_age = int(self.server.sessions.lifetime)
                self._reply(303, b"", "text/plain", {"Location": "/", "Set-Cookie":
                            f"{COOKIE}={self.server.sessions.issue()}; HttpOnly; SameSite=Strict; Path=/; "
                            f"Max-Age={max_age}{secure}"})
                raise _Handled
            throttle.failed(ip, "wrong token in the login link")
            return False
        if cookie is not None:
            throttle.failed(ip, "invalid or expired session cookie")
        return False

    # ------------------------------------------------------------------ endpoints
    def _params(self, query: dict, allowed: dict) -> dict:
        """{name: choices or None}: unknown or repeated parameters and bad values are 400."""
        out = {}
        for name, values in query.items():
            if name not in allowed:
                raise BadRequest(400, f"unknown query parameter {name!r}; allowed: {', '.join(allowed) or 'none'}")
            if len(values) != 1:
                raise BadRequest(400, f"query parameter {name!r} given {len(values)} times")
            choices = allowed[name]
            if choices is not None and values[0] not in choices:
                raise BadRequest(400, f"{name}={values[0][:40]!r} is not one of: {', '.join(choices)}")
            out[name] = values[0]
        return out

    def page(self, query, cam=None):
        self._params(query, {})
        app = self.app
        c = cam or app.default_camera
        body = render_page(app.views, c.view, c.loop.source.describe(), camera=cam and cam.name,
                           cameras=list(app.cameras))
        self._reply(200, body, "text/html; charset=utf-8", {"Content-Security-Policy":
                    "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self'; "
                    + FRAME_ANCESTORS},
                    head=self.command == "HEAD")

    def latest(self, query, cam=None):
        self._params(query, {})
        loop = (cam or self.app.default_camera).loop
        snap = loop.latest
        if snap is None:
            raise BadRequest(503, "no frame processed yet", {"Retry-After": "1"})
        rec = dict(snap.record)
        rec["camera"] = loop.name
        rec["age_ms"] = round((time.perf_counter() - snap.t_done) * 1e3, 1)
        rec["fps"] = round(loop.fps, 2)
        self._json(200, rec)

    def history(self, query, cam=None):
        self._params(query, {})
        self._json(200, (cam or self.app.default_camera).loop.history.snapshot())

    def frame_jpg(self, query, cam=None):
        p = self._params(query, {"view": self.app.views})
        loop = (cam or self.app.default_camera).loop
        snap = loop.latest
        if snap is None:
            raise BadRequest(503, "no frame processed yet", {"Retry-After": "1"})
        view = p.get("view", "raw")
        frame_id, jpeg = (cam or self.app.default_camera).streams.frames.get(view, snap)  # cached per frame and view
        self._reply(200, jpeg, "image/jpeg", {"X-Frame-Id": str(frame_id)}, head=self.command == "HEAD")

    def map_png(self, query, cam=None):
        loop = (cam or self.app.default_camera).loop
        maps = [m for m in MAPS if loop.latest is None or loop.latest.result.map(m) is not None]
        p = self._params(query, {"map": maps})
        snap = loop.latest
        if snap is None:
            raise BadRequest(503, "no frame processed yet", {"Retry-After": "1"})
        name = p.get("map", loop.region_map)
        m = snap.result.map(name)
        if m is None:
            raise BadRequest(404, f"this model has no {name} map")
        ok, buf = cv2.imencode(".png", normalise_for_display(m))
        self._reply(200, buf.tobytes(), "image/png", {"X-Frame-Id": str(snap.frame.id), "X-Map": name},
                    head=self.command == "HEAD")

    def metrics(self, query):
        self._params(query, {})
        body, ctype = self.app.metrics.render()
        self._reply(200, body, ctype, head=self.command == "HEAD")

    def healthz(self, query):
        self._params(query, {})
        ok, reason = self.app.health()
        self.app.metrics.healthy.set(1 if ok else 0)
        body = {"status": "ok" if ok else "unavailable", "reason": reason}
        if len(self.app.cameras) > 1:
            body["cameras"] = {n: dict(zip(("ok", "reason"), c.loop.health())) for n, c in self.app.cameras.items()}
        self._json(200 if ok else 503, body)

    def cameras(self, query):
        self._params(query, {})
        self._json(200, {"default": self.app.default_camera.name,
                         "cameras": [c.status() for c in self.app.cameras.values()]})

    def _camera_route(self, m, query):
        name = m.group(1) or m.group(3)
        cam = self.app.cameras.get(name)
        if cam is None:
            self._discard_body()
            raise BadRequest(404, f"no camera named {name!r}; cameras: {', '.join(self.app.cameras)}")
        self._discard_body()
        what = m.group(2) if m.group(1) else m.group(4)
        return {"": Handler.page, "stream.mjpg": Handler.stream, "latest": Handler.latest, "history": Handler.history,
                "frame.jpg": Handler.frame_jpg, "map.png": Handler.map_png}[what](self, query, cam)

    def stream(self, query, cam=None):
        cam = cam or self.app.default_camera
        p = self._params(query, {"view": self.app.views})
        view = p.get("view", cam.view)
        if self.command == "HEAD":
            return self._reply(200, b"", f"multipart/x-mixed-replace; boundary={BOUNDARY}", head=True)
        enc = cam.streams.try_attach(view)
        if enc is None:
            raise BadRequest(503, f"too many viewers (max_viewers = {self.app.cfg.max_viewers})", {"Retry-After": "5"})
        try:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.app.metrics.http.labels("200").inc()
            self.connection.settimeout(SEND_TIMEOUT)
            sent = 0
            counter = self.app.metrics.stream_frames.labels(cam.name, view)
            while not cam.streams.closed.is_set() and not enc.closed:
                item = enc.wait_newer(sent, timeout=0.5)
                if item is None:
                    continue
                sent = item.seq
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(item.jpeg)}\r\n"
                        f"X-Frame-Id: {item.frame_id}\r\n\r\n").encode("ascii")
                self.wfile.write(head + item.jpeg + b"\r\n")
                self.wfile.flush()
                counter.inc()
            try:
                self.wfile.write(f"--{BOUNDARY}--\r\n".encode("ascii"))
            except OSError:
                pass
        except (ConnectionError, TimeoutError, socket.timeout):
            pass
        finally:
            enc.detach()

    def _explain(self, query):
        self._params(query, {})
        length = self._body_length or 0
        if length > self.app.cfg.max_body:
            self.close_connection = True
            raise BadRequest(413, f"body of {length} bytes is over the limit of {self.app.cfg.max_body}")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":  # also what keeps plain HTML forms on other sites out
            self._discard_body()
            raise Refused(415, "send the body as application/json (Content-Type: application/json)",
                          f"refused a POST with Content-Type {ctype[:60] or 'none'!r}", level=logging.INFO)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            if self.conn.expired:
                raise Refused(408, f"request not complete within {self.server.request_timeout:g} s",
                              f"request body not complete within {self.server.request_timeout:g} s: closed")
            raise BadRequest(400, "body shorter than Content-Length")
        self._request_read()
        params = {}
        if body.strip():
            try:
                params = json.loads(body)
            except RecursionError:
                raise BadRequest(400, "body is nested too deeply") from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest(400, f"body is not valid JSON: {str(exc)[:120]}") from None
            if not isinstance(params, dict):
                raise BadRequest(400, "body must be a JSON object like {\"method\": \"rise\", \"class\": 285}")
        unknown = set(params) - {"method", "class", "camera"}
        if unknown:
            raise BadRequest(400, f"unknown field {sorted(unknown)[0]!r}; allowed: method, class, camera")
        app = self.app
        cam_name = params.get("camera")
        if cam_name is not None and (not isinstance(cam_name, str) or cam_name not in app.cameras):
            raise BadRequest(400, f"no camera named {str(cam_name)[:40]!r}; cameras: {', '.join(app.cameras)}")
        cam = app.camera(cam_name)
        method = params.get("method", app.jobs.methods[0] if "fastcam" not in app.jobs.methods else "fastcam")
        if not isinstance(method, str):
            raise BadRequest(400, "method must be a string")
        cls = params.get("class")
        class_index = None
        if cls is not None:
            if isinstance(cls, bool) or not isinstance(cls, (int, str)):
                raise BadRequest(400, "class must be a class index or a label")
            labels = app.model.labels
            if isinstance(cls, int):
                if not 0 <= cls < len(labels):
                    raise BadRequest(400, f"class {cls} out of range 0..{len(labels) - 1}")
                class_index = cls
            else:
                low = [lbl.lower() for lbl in labels]
                if cls.lower() not in low:
                    raise BadRequest(400, f"no class named {cls[:60]!r}")
                class_index = low.index(cls.lower())
        try:
            job = app.jobs.submit(method, class_index, cam.loop.latest)
        except JobRejected as exc:
            raise BadRequest(exc.status, str(exc), {"Retry-After": "2"} if exc.status in (429, 503) else None) from None
        self._json(202, {"job": job.id, "state": job.state, "url": f"/api/jobs/{job.id}"},
                   {"Location": f"/api/jobs/{job.id}"})

    def _job(self, job_id: str, map_png: bool, query):
        self._params(query, {})
        job = self.app.jobs.get(job_id)
        if job is None:
            raise BadRequest(404, "no such job (unknown, or dropped after jobs_kept newer ones)")
        if not map_png:
            return self._json(200, job.as_dict())
        if job.map_png is None:
            raise BadRequest(404 if job.state in ("done", "failed") else 409, f"job is {job.state}: no map")
        self._reply(200, job.map_png, "image/png", head=self.command == "HEAD")


class _Handled(Exception):
    """The response was already sent (e.g. the token cookie redirect)."""


GET_ROUTES = {
    "/": Handler.page,
    "/index.html": Handler.page,
    "/stream.mjpg": Handler.stream,
    "/api/latest": Handler.latest,
    "/api/history": Handler.history,
    "/api/frame.jpg": Handler.frame_jpg,
    "/api/map.png": Handler.map_png,
    "/metrics": Handler.metrics,
    "/healthz": Handler.healthz,
    "/api/cameras": Handler.cameras,
}
