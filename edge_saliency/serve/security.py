"""What keeps `edge-saliency serve` standing when it is put on a network: the request guards.

Kept apart from the routes in serve/http.py so that the rules are in one place:

- `ConnectionLimits`: a global and a per-client cap on open connections (a connection over either
  is answered 503 and closed at once, before any thread is started for it). At the global cap a
  new connection first evicts the one that has waited longest (over 1 s) for its request: a flood
  of idle sockets from many addresses cannot lock out a client that actually sends a request.
- `Deadlines`: each request (request line, headers and body together) must arrive within
  `request_timeout` seconds of the connection waiting for it; one reaper thread shuts the read
  side of late sockets, so a client that trickles one header line every few seconds is cut off
  at the deadline rather than kept forever by a per-read timeout.
- `read_head`: the request line and headers are read under one byte cap (`max_header`), before
  anything else looks at them (authentication included).
- `HostPolicy`: the Host header must name this server (loopback names, the bound address, the
  machine's names and addresses when bound to a wildcard, and `allowed_hosts`): a page on
  attacker.example that rebinds its DNS name to this device gets 421. A browser request from
  another origin (Origin, Sec-Fetch-Site) gets 403.
- `content_length`: strict parsing (ASCII digits only, one header, not with Transfer-Encoding).
- `Sessions`: the browser cookie is an HMAC-signed expiry, never the token itself.
- `LoginThrottle`: wrong tokens are logged at warning and, after a few from one client, refused
  with 429 for a while.
- `TlsContext`: cert/key from the config, reloaded on SIGHUP (new connections use the new pair).
- `SECURITY_HEADERS`: sent on every response (no framing, no cross-origin reads).
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket
import ssl
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

log = logging.getLogger("edge_saliency")

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "127.0.0.1", "::1")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
FRAME_ANCESTORS = "frame-ancestors 'none'"
FD_RESERVE = 64  # descriptors kept for the model, the camera, logs and the probe
ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Refused(Exception):
    """A request refused by a guard: HTTP status, message for the client, log line (None: not logged)."""

    def __init__(self, status: int, message: str, log_line: str | None = None, headers: dict | None = None,
                 level: int = logging.WARNING):
        super().__init__(message)
        self.status, self.message, self.log_line, self.headers, self.level = status, message, log_line, headers, level


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("", "0.0.0.0", "::")


class RateLimitedLog:
    """One log line per key per `every` seconds, with the count of the ones left out."""

    def __init__(self, every: float = 10.0, max_keys: int = 256):
        self.every = every
        self.max_keys = max_keys
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: str, level: int, msg: str, *args) -> bool:
        now = time.monotonic()
        with self._lock:
            last, skipped = self._last.get(key, (-1e9, 0))
            if now - last < self.every:
                self._last[key] = (last, skipped + 1)
                return False
            self._last[key] = (now, 0)
            self._last.move_to_end(key)
            while len(self._last) > self.max_keys:
                self._last.popitem(last=False)
        if skipped:
            msg += f" ({skipped} more like it in the last {self.every:g} s)"
        log.log(level, msg, *args)
        return True


# ---------------------------------------------------------------------- connections
def fd_limit() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return None if soft == resource.RLIM_INFINITY else int(soft)
    except (ImportError, ValueError, OSError):
        return None


class ConnectionLimits:
    """Open connections, in total and per client address, under caps."""

    def __init__(self, max_total: int, max_per_client: int, metrics=None):
        limit = fd_limit()
        self.max_total = max_total
        if limit is not None and max_total > limit - FD_RESERVE:
            self.max_total = max(8, limit - FD_RESERVE)
            log.warning("max_connections = %d is over what the file-descriptor limit (%d) allows: using %d "
                        "(raise LimitNOFILE= to allow more)", max_total, limit, self.max_total)
        self.max_per_client = max_per_client
        self.metrics = metrics
        self.total = 0
        self.per_client: dict[str, int] = {}
        self._lock = threading.Lock()
        self.refused = 0
        self.evicted = 0
        self._log = RateLimitedLog(10.0)

    def admit(self, ip: str, evict=None) -> str | None:
        """Count a new connection in; or the reason it is refused (nothing counted then).

        evict: () -> bool, called at the global cap: cut the connection that has waited longest for
        its request (an idle or trickling socket); True if it did, and then this one is let in (the
        evicted one's slot is freed as its thread ends).
        """
        with self._lock:
            n = self.per_client.get(ip, 0)
            if self.total >= self.max_total and n < self.max_per_client and evict is not None and evict():
                self.total += 1
                self.per_client[ip] = n + 1
                self.evicted += 1
                return None
            if self.total >= self.max_total:
                reason = f"{self.total} connections open (max_connections = {self.max_total})"
            elif n >= self.max_per_client:
                reason = f"{n} connections open from {ip} (max_client_connections = {self.max_per_client})"
            else:
                self.total += 1
                self.per_client[ip] = n + 1
                return None
            self.refused += 1
        self._log(f"conn:{ip}", logging.WARNING, "refused a connection from %s: %s", ip, reason)
        if self.metrics is not None:
            self.metrics.http.labels("503").inc()
        return reason

    def release(self, ip: str) -> None:
        with self._lock:
            self.total -= 1
            n = self.per_client.get(ip, 1) - 1
            if n <= 0:
                self.per_client.pop(ip, None)
            else:
                self.per_client[ip] = n


def refuse_connection(sock: socket.socket, reason: str) -> None:
    """Answer 503 without blocking (best effort) and close: no thread is started for it."""
    body = b'{"error": "too many connections", "status": 503}'
    try:
        sock.setblocking(False)
        sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class AcceptBackoff:
    """accept() failing with EMFILE/ENFILE must not spin the accept loop: sleep, growing, and say so."""

    def __init__(self, first: float = 0.05, most: float = 0.5):
        self.first, self.most = first, most
        self.delay = 0.0
        self.failures = 0
        self._log = RateLimitedLog(10.0)

    def failed(self, exc: OSError, stop: threading.Event | None = None) -> None:
        self.failures += 1
        self.delay = self.first if self.delay == 0 else min(self.delay * 2, self.most)
        self._log("accept", logging.WARNING, "accept() failed: %s; backing off %.2f s (too many open files? "
                  "see max_connections and LimitNOFILE=)", exc.strerror or exc, self.delay)
        if stop is not None:
            stop.wait(self.delay)
        else:
            time.sleep(self.delay)

    def ok(self) -> None:
        self.delay = 0.0


class Conn:
    """One accepted connection, as the reaper sees it."""

    __slots__ = ("sock", "ip", "deadline", "expired", "evicted")

    def __init__(self, sock, ip: str):
        self.sock, self.ip = sock, ip
        self.deadline: float | None = None
        self.expired = False
        self.evicted = False  # cut to make room for a new connection at the global cap


class Deadlines:
    """Shuts the read side of connections whose request is not in by its deadline."""

    def __init__(self, tick: float = 0.25):
        self.tick = tick
        self._conns: set[Conn] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.expired = 0
        self.evictions = 0

    def start(self) -> "Deadlines":
        self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def add(self, conn: Conn) -> None:
        with self._lock:
            self._conns.add(conn)

    def remove(self, conn: Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def evict_oldest_waiting(self, timeout: float, min_wait: float = 1.0) -> bool:
        """Cut the connection that has waited longest (> min_wait s) for its request; False if none."""
        now = time.monotonic()
        with self._lock:
            waiting = [c for c in self._conns if c.deadline is not None and not c.expired
                       and now - (c.deadline - timeout) > min_wait]
            victim = min(waiting, key=lambda c: c.deadline) if waiting else None
            if victim is None:
                return False
            victim.expired = victim.evicted = True
        self.evictions += 1
        try:
            socket.socket.shutdown(victim.sock, socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._conns if c.deadline is not None and now > c.deadline and not c.expired]
            for c in late:
                c.expired = True
                self.expired += 1
                try:  # the base class's shutdown: SSLSocket.shutdown would drop the TLS state
                    socket.socket.shutdown(c.sock, socket.SHUT_RD)
                except OSError:
                    pass


def read_head(rfile, max_bytes: int) -> tuple[bytes, bytes] | None:
    """(request line, header block) read under one cap; None when the client sent nothing (closed,
    or idle past the deadline, between requests).

    Raises Refused(414) for a request line over the cap, Refused(431) for headers over it and
    Refused(408) for a request cut off part-way (the deadline, or the client closed).
    """
    cut = Refused(408, "request not complete in time")
    line = rfile.readline(max_bytes + 1)
    blanks = 0
    while line in (b"\r\n", b"\n") and blanks < 4:  # a few blank lines before a request are allowed
        blanks += 1
        line = rfile.readline(max_bytes + 1)
    if not line:
        return None
    if len(line) > max_bytes:
        raise Refused(414, f"request line over {max_bytes} bytes")
    if not line.endswith(b"\n"):
        raise cut
    used = len(line)
    parts = []
    while True:
        h = rfile.readline(max_bytes - used + 1)
        used += len(h)
        if used > max_bytes:
            raise Refused(431, f"request headers over {max_bytes} bytes")
        if not h.endswith(b"\n"):
            raise cut
        parts.append(h)
        if h in (b"\r\n", b"\n"):
            return line, b"".join(parts)


_DIGITS = re.compile(r"[0-9]{1,15}", re.ASCII)


def content_length(headers) -> int | None:
    """The body length the headers announce (None: no body); Refused(400/411) for anything ambiguous."""
    values = headers.get_all("Content-Length") or []
    te = headers.get_all("Transfer-Encoding") or []
    if te:
        if values:
            raise Refused(400, "both Transfer-Encoding and Content-Length", "request with both Transfer-Encoding "
                          "and Content-Length refused", level=logging.INFO)
        raise Refused(411, "send the body with Content-Length (no chunked transfer)")
    if not values:
        return None
    if len(values) > 1:
        raise Refused(400, "more than one Content-Length header", "request with duplicate Content-Length refused",
                      level=logging.INFO)
    text = values[0].strip(" \t")
    if not _DIGITS.fullmatch(text):
        raise Refused(400, "bad Content-Length", f"request with a bad Content-Length ({text[:20]!r}) refused",
                      level=logging.INFO)
    return int(text)


# ---------------------------------------------------------------------- hosts and origins
def split_host(value: str) -> tuple[str, str]:
    """'Example.COM:8080' -> ('example.com', '8080'); '[::1]:80' -> ('::1', '80')."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if value.count(":") > 1:  # a bare IPv6 address
        return value, ""
    host, _, port = value.partition(":")
    return host.rstrip("."), port


class HostPolicy:
    """Which Host headers name this server, and which Origins may talk to it."""

    REFRESH = 30.0  # seconds between re-reads of the interface addresses (DHCP may change them)

    def __init__(self, bound_host: str, allowed: list[str] | None = None):
        self.bound_host = bound_host.strip("[]").lower()
        self.extra = [a.strip().lower() for a in (allowed or []) if a.strip()]
        self.any = "*" in self.extra
        self._names: set[str] = set()
        self._suffixes: tuple[str, ...] = tuple(a[1:] for a in self.extra if a.startswith("*."))
        self._t = -1e9
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        names = set(LOOPBACK_NAMES) | {a for a in self.extra if not a.startswith("*")}
        if not is_wildcard(self.bound_host):
            names.add(self.bound_host)
        else:
            names |= local_names()
        with self._lock:
            self._names = {split_host(n)[0] if not n.count(":") > 1 else n for n in names}
            self._t = time.monotonic()

    @property
    def names(self) -> set[str]:
        return set(self._names)

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        host, _ = split_host(host_header)
        if host.endswith(".localhost") or host in self._names or any(host.endswith(s) for s in self._suffixes):
            return True
        if is_wildcard(self.bound_host) and time.monotonic() - self._t > self.REFRESH:
            self.refresh()
            return host in self._names
        return False

    def check(self, headers, method: str, version: str = "HTTP/1.1") -> None:
        """Refused(421) for a Host that is not this server, Refused(403) for a cross-site browser request."""
        host = headers.get("Host")
        if host is None:
            if version != "HTTP/1.0" or headers.get("Origin") or headers.get("Sec-Fetch-Site"):
                raise Refused(400, "missing Host header", "request without a Host header refused",
                              level=logging.INFO)  # RFC 9112 3.2: HTTP/1.1 requires it
            return  # command-line tools speaking HTTP/1.0
        if len(headers.get_all("Host") or []) > 1:
            raise Refused(400, "more than one Host header", "request with two Host headers refused")
        if not self.allows(host):
            raise Refused(421, "this server does not answer to that Host name (set allowed_hosts)",
                          f"refused a request for Host {host[:80]!r} (not in allowed_hosts; DNS rebinding?)")
        origin = headers.get("Origin")
        if origin is not None:
            o = urlsplit(origin.strip()) if origin.strip() != "null" else None
            if o is None or o.scheme not in ("http", "https") or not o.netloc:
                raise Refused(403, "cross-origin requests are not allowed",
                              f"refused a {method} from Origin {origin[:80]!r}")
            oh, op = split_host(o.netloc)
            hh, hp = split_host(host)
            default = "443" if o.scheme == "https" else "80"
            if oh != hh or (op or default) != (hp or default):
                raise Refused(403, "cross-origin requests are not allowed",
                              f"refused a cross-origin {method} from {origin[:80]!r} (Host {host[:80]!r})")
        site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site in ("cross-site", "same-site"):
            navigate = (headers.get("Sec-Fetch-Mode") or "").strip().lower() == "navigate"
            dest = (headers.get("Sec-Fetch-Dest") or "").strip().lower()
            if dest in ("iframe", "frame", "embed", "object"):  # frame-ancestors 'none' says so too
                raise Refused(403, "this page may not be framed by another site",
                              f"refused a {site} {dest} of {method}")
            if not (navigate and method in ("GET", "HEAD")):
                raise Refused(403, "cross-site requests are not allowed",
                              f"refused a {site} {method} (Sec-Fetch-Site)")


def local_names() -> set[str]:
    """The machine's host names and interface addresses (for a server bound to 0.0.0.0 or ::)."""
    out = set()
    try:
        name = socket.gethostname().lower()
        out |= {name, name + ".local", socket.getfqdn().lower()}
    except OSError:
        pass
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    out.add(a.address.split("%")[0].lower())
    except Exception:  # psutil missing or refused: names only
        pass
    return out


# ---------------------------------------------------------------------- credentials
class Sessions:
    """Browser sessions: '<expiry>.<nonce>.<HMAC>' under a key derived from the token (so a cookie
    never carries the token, and changing the token ends every session)."""

    def __init__(self, token: str, lifetime_s: float):
        self.key = hmac.new(token.encode("utf-8"), b"edge-saliency session cookie v1", hashlib.sha256).digest()
        self.lifetime = lifetime_s

    def _mac(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        exp = int((time.time() if now is None else now) + self.lifetime)
        payload = f"{exp}.{secrets.token_hex(8)}"
        return f"{payload}.{self._mac(payload)}"

    def valid(self, value: str, now: float | None = None) -> bool:
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 12:
            return False
        try:
            payload = f"{parts[0]}.{parts[1]}"
            good = hmac.compare_digest(self._mac(payload), parts[2])
        except (UnicodeEncodeError, TypeError):
            return False
        return good and int(parts[0]) > (time.time() if now is None else now)


class LoginThrottle:
    """Wrong tokens per client: each logged at warning; `max_failures` within `window` s lock the
    client out (429) for `lockout` s. Bounded in memory (the oldest clients are forgotten)."""

    def __init__(self, max_failures: int = 10, window: float = 60.0, lockout: float = 60.0, max_clients: int = 4096):
        self.max_failures, self.window, self.lockout = max_failures, window, lockout
        self.max_clients = max_clients
        self._state: OrderedDict[str, list] = OrderedDict()  # ip -> [first failure t, count, locked until]
        self._lock = threading.Lock()

    def locked_for(self, ip: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            st = self._state.get(ip)
            return max(0.0, st[2] - now) if st else 0.0

    def failed(self, ip: str, what: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            st = self._state.get(ip)
            if st is None or now - st[0] > self.window:
                st = [now, 0, 0.0]
            st[1] += 1
            locked = st[1] >= self.max_failures and st[2] <= now
            if locked:
                st[2] = now + self.lockout
                st[0], st[1] = now, 0
            self._state[ip] = st
            self._state.move_to_end(ip)
            while len(self._state) > self.max_clients:
                self._state.popitem(last=False)
        log.warning("failed login from %s: %s", ip, what)
        if locked:
            log.warning("%s: %d failed logins within %g s: refusing it for %g s", ip, self.max_failures,
                        self.window, self.lockout)

    def succeeded(self, ip: str) -> None:
        with self._lock:
            self._state.pop(ip, None)


def generate_token() -> str:
    return secrets.token_urlsafe(24)


# ---------------------------------------------------------------------- TLS
class TlsContext:
    """A server SSLContext from cert/key files; `reload()` builds a new one (SIGHUP)."""

    def __init__(self, cert: str, key: str):
        self.cert, self.key = cert, key
        self.context = self._build()

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def reload(self) -> bool:
        try:
            self.context = self._build()
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS reload failed, keeping the old certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def load_tls(cert: str | None, key: str | None, env=None) -> TlsContext | None:
    """The TLS context of tls_cert/tls_key; unset, systemd credentials tls.crt + tls.key if given."""
    from edge_saliency.settings import ConfigError

    if not cert and not key:
        d = (os.environ if env is None else env).get("CREDENTIALS_DIRECTORY")
        if not d or not (os.path.isfile(os.path.join(d, "tls.crt")) and os.path.isfile(os.path.join(d, "tls.key"))):
            return None
        cert, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
    if not cert or not key:
        raise ConfigError("TLS needs both tls_cert and tls_key")
    try:
        return TlsContext(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"tls_cert/tls_key: file not found: {exc.filename}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert/tls_key: cannot load the certificate and key: {exc}") from None
