"""`edge-saliency serve` put on a network: every refusal of a hostile or cross-site client, checked
over loopback with real HTTP clients (http.client, raw sockets, ssl) for its status AND its log
line; connection caps, the whole-request deadline, the header cap, EMFILE back-off; Host/Origin
checks; signed session cookies and login throttling; TLS and its reload; the watchdog fed by HTTP
liveness; explain jobs isolated from the live loop; the frame cache; the atomic viewer cap."""
from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from serve_util import RecordingNotifier, get_json, raw, request, running, start_daemon, wait_for

TOKEN = "tok-for-security-tests-0123"


@pytest.fixture(scope="module")
def daemon(lite0_model):
    d = start_daemon(lite0_model, request_timeout=2, max_header=8192, max_client_connections=4, max_connections=6,
                     access_log="true")
    assert wait_for(lambda: d.loop.latest, 60), "no frame processed"
    yield d
    d.stop()


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    return caplog


def logged(caplog, words, level=None):
    return [r for r in caplog.records if words in r.getMessage() and (level is None or r.levelno == level)]


def connect(d, source_ip="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source_ip, 0))
    s.connect(d.address)
    return s


def read_all(s, limit=1 << 20) -> bytes:
    out = b""
    try:
        while len(out) < limit:
            c = s.recv(65536)
            if not c:
                break
            out += c
    except (ConnectionResetError, socket.timeout):
        pass
    return out


def wait_open(d, n):
    return wait_for(lambda: d.server.limits.total == n, 10, 0.02)


# ---------------------------------------------------------------------- connections
def open_stream(d, source_ip):
    s = connect(d, source_ip)
    s.sendall(b"GET /stream.mjpg?view=raw HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return s


def test_per_client_and_global_connection_caps_answer_503_and_log(daemon, logs):
    held = []
    try:
        for _ in range(4):
            held.append(connect(daemon))
        assert wait_open(daemon, 4)
        extra = connect(daemon)
        resp = read_all(extra)
        extra.close()
        assert resp.startswith(b"HTTP/1.1 503") and b"too many connections" in resp
        assert logged(logs, "refused a connection from 127.0.0.1: 4 connections open from 127.0.0.1 "
                            "(max_client_connections = 4)", logging.WARNING)
    finally:
        for s in held:
            s.close()
    assert wait_open(daemon, 0)
    # the global cap (6), full of streams (busy connections, never evicted): a 7th is refused
    held = [open_stream(daemon, ip) for ip in ("127.0.0.1",) * 3 + ("127.0.0.2",) * 3]
    try:
        assert wait_open(daemon, 6)
        s = connect(daemon, "127.0.0.4")
        assert read_all(s).startswith(b"HTTP/1.1 503")
        s.close()
        assert logged(logs, "refused a connection from 127.0.0.4: 6 connections open (max_connections = 6)")
        assert daemon.server.limits.total == 6  # refused ones were never counted in
        # one stream leaves; an idle socket takes its place; once it has idled > 1 s, a client with
        # a request evicts it instead of being refused
        held.pop().close()
        assert wait_open(daemon, 5)
        evicted = daemon.server.deadlines.evictions
        idle = connect(daemon, "127.0.0.3")
        assert wait_open(daemon, 6)
        time.sleep(1.3)
        c = http.client.HTTPConnection(*daemon.address, timeout=10, source_address=("127.0.0.4", 0))
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
        c.close()
        assert daemon.server.deadlines.evictions >= evicted + 1  # (the watchdog's probe may have been first)
        assert read_all(idle) == b""  # cut without an answer
        idle.close()
        assert wait_for(lambda: logged(logs, "closed a connection that had sent no complete request, to make room "
                                             "at max_connections = 6", logging.INFO), 5)
    finally:
        for s in held:
            s.close()
    assert wait_open(daemon, 0)
    assert request(daemon, "GET", "/healthz")[0] == 200


def test_slowloris_is_cut_at_the_whole_request_deadline_with_408(daemon, logs):
    s = connect(daemon)
    try:
        s.sendall(b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        got = b""
        for i in range(20):  # one header line every 0.4 s: each read is quick, the request never ends
            try:
                s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            except OSError:
                break
            s.settimeout(0.4)
            try:
                c = s.recv(4096)
            except socket.timeout:
                continue
            if not c:
                break
            got += c
            break
        s.settimeout(5)
        got += read_all(s)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:100]
    assert elapsed < 6.0  # request_timeout = 2 s, never the 20 x 0.4 s the client wanted
    assert wait_for(lambda: logged(logs, "request not complete within 2 s (request_timeout): closed"), 5)
    assert daemon.server.deadlines.expired >= 1


def test_an_idle_keep_alive_connection_is_closed_at_the_deadline(daemon):
    s = connect(daemon)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        s.settimeout(8)
        rest = read_all(s)  # nothing more asked: the server closes
        assert time.monotonic() - t0 < 6.0 and b"HTTP/1.1" not in rest
    finally:
        s.close()


def test_headers_over_the_cap_get_431_before_auth(lite0_model, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    with running(lite0_model, token=TOKEN, max_header=8192) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        status, resp = raw(d, b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert status == 431
        # many medium lines add up under the one cap too
        lines = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(90))
        assert raw(d, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n")[0] == 431
        assert logged(caplog, "127.0.0.1: request headers over 8192 bytes: refused", logging.WARNING)
        assert raw(d, b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 414
        assert request(d, "GET", "/healthz")[0] == 200


def test_accept_failing_with_emfile_backs_off_instead_of_spinning(daemon, logs):
    from edge_saliency.serve.http import DaemonHTTPServer

    srv = DaemonHTTPServer(("127.0.0.1", 0), daemon)
    real = srv.socket

    class NoFiles:
        calls = 0

        def accept(self):
            NoFiles.calls += 1
            raise OSError(errno.EMFILE, "Too many open files")

        def __getattr__(self, name):
            return getattr(real, name)

    srv.socket = NoFiles()
    try:
        t0 = time.monotonic()
        for _ in range(4):
            srv._handle_request_noblock()  # what serve_forever does when the listening socket is readable
        elapsed = time.monotonic() - t0
    finally:
        srv.socket = real
        srv.server_close()
    assert NoFiles.calls == 4
    assert elapsed >= 0.05 + 0.1 + 0.2 + 0.4 - 0.02  # 0.05 s doubling: a spinning loop would take ~0
    assert srv.backoff.failures == 4 and srv.backoff.delay == 0.4
    assert logged(logs, "accept() failed: Too many open files; backing off", logging.WARNING)
    assert len(logged(logs, "accept() failed")) == 1  # rate-limited: one line per 10 s


# ---------------------------------------------------------------------- hosts, origins, bodies
def test_a_foreign_host_header_gets_421_and_is_logged(daemon, logs):
    status, h, body = request(daemon, "GET", "/api/frame.jpg", headers={"Host": "attacker.example"})
    assert status == 421 and b"allowed_hosts" in body and h["content-type"] == "application/json"
    assert logged(logs, "refused a request for Host 'attacker.example' (not in allowed_hosts; DNS rebinding?)",
                  logging.WARNING)
    for host in ("127.0.0.1", "localhost", f"127.0.0.1:{daemon.address[1]}", "LOCALHOST.", "[::1]:8080",
                 "cam.localhost"):
        assert request(daemon, "GET", "/healthz", headers={"Host": host})[0] == 200, host
    status, resp = raw(daemon, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
                               b"Connection: close\r\n\r\n")
    assert status == 400
    assert logged(logs, "request with two Host headers refused", logging.WARNING)
    assert raw(daemon, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 400  # HTTP/1.1 needs Host
    assert logged(logs, "request without a Host header refused", logging.INFO)
    assert raw(daemon, b"GET /healthz HTTP/1.0\r\n\r\n")[0] == 200  # HTTP/1.0 may leave it out


def test_allowed_hosts_extends_the_list(lite0_model):
    with running(lite0_model, allowed_hosts="cam.example.org, *.lan") as d:
        assert wait_for(lambda: d.loop.latest, 60)
        for host, want in (("cam.example.org", 200), ("pi.lan", 200), ("x.pi.lan:8080", 200), ("lan", 421),
                           ("example.org", 421)):
            assert request(d, "GET", "/healthz", headers={"Host": host})[0] == want, host


def test_cross_site_requests_are_refused_403(daemon, logs):
    post = {"Content-Type": "application/json"}
    status, _, body = request(daemon, "POST", "/api/explain", b'{"method": "fastcam"}',
                              {**post, "Origin": "http://evil.example"})
    assert status == 403 and b"cross-origin" in body
    assert logged(logs, "refused a cross-origin POST from 'http://evil.example'", logging.WARNING)
    port = daemon.address[1]
    # same host, other port: another origin (another service on this device)
    assert request(daemon, "POST", "/api/explain", b"{}", {**post, "Origin": "http://127.0.0.1:1"})[0] == 403
    assert request(daemon, "POST", "/api/explain", b"{}", {**post, "Origin": "null"})[0] == 403
    assert request(daemon, "GET", "/api/latest", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})[0] == 403
    assert logged(logs, "refused a cross-site GET (Sec-Fetch-Site)")
    assert request(daemon, "GET", "/stream.mjpg", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors",
                                                         "Sec-Fetch-Dest": "image"})[0] == 403
    # a link from another site to the page is a navigation: allowed; our own page's requests too
    assert request(daemon, "GET", "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                                                "Sec-Fetch-Dest": "document"})[0] == 200
    assert request(daemon, "GET", "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                                                "Sec-Fetch-Dest": "iframe"})[0] == 403
    assert logged(logs, "refused a cross-site iframe of GET")
    same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin", "Host": f"127.0.0.1:{port}"}
    status, _, body = request(daemon, "POST", "/api/explain", b'{"method": "fastcam"}', {**post, **same})
    assert status == 202, body


@pytest.mark.parametrize("headers,body", [
    ({}, b""),  # no Content-Type at all (what a cross-site fetch without preflight may send)
    ({}, b'{"method": "fastcam"}'),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b""),  # an empty HTML form
    ({"Content-Type": "text/plain"}, b'{"method": "fastcam"}'),
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n"),
])
def test_post_must_be_json_415(daemon, logs, headers, body):
    daemon.server.refusals._last.clear()  # refusal lines are rate-limited per kind: see each one here
    status, h, resp = request(daemon, "POST", "/api/explain", body, headers)
    assert status == 415 and "application/json" in json.loads(resp)["error"]
    assert logged(logs, "refused a POST with Content-Type", logging.INFO)


@pytest.mark.parametrize("length_lines,words", [
    (b"Content-Length: \xb2\r\n", "bad Content-Length"),  # superscript two (latin-1: str.isdigit() is True)
    (b"Content-Length: \xc2\xb2\r\n", "bad Content-Length"),  # the same in UTF-8
    (b"Content-Length: \xd9\xa3\r\n", "bad Content-Length"),  # Arabic-Indic three
    (b"Content-Length: +2\r\n", "bad Content-Length"),
    (b"Content-Length: 2\r\nContent-Length: 2\r\n", "duplicate Content-Length"),
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "both Transfer-Encoding and Content-Length"),
])
def test_strict_content_length_400(daemon, logs, length_lines, words):
    status, resp = raw(daemon, b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       + length_lines + b"\r\n{}")
    assert status == 400, resp[:200]
    assert b"Traceback" not in resp
    assert logged(logs, words)
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]


def test_deeply_nested_json_is_400_not_500(daemon, logs):
    for body in (b"[" * 60000, b'{"a":' * 12000, b"[" * 5000 + b"]" * 5000):
        status, h, resp = request(daemon, "POST", "/api/explain", body, {"Content-Type": "application/json"})
        assert status == 400, (status, resp[:200])
    assert "nested too deeply" in json.loads(resp)["error"]
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]


def test_every_response_forbids_framing_and_cross_origin_reads(daemon):
    for method, path in (("GET", "/"), ("GET", "/api/latest"), ("GET", "/api/frame.jpg"), ("GET", "/nope"),
                         ("GET", "/api/latest?x=1"), ("HEAD", "/healthz")):
        status, h, _ = request(daemon, method, path)
        assert h["cross-origin-resource-policy"] == "same-origin", path
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    status, resp = raw(daemon, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    assert status == 431 and b"Cross-Origin-Resource-Policy: same-origin" in resp  # the stdlib's error path too
    from serve_util import MjpegReader

    s = MjpegReader(daemon, "/stream.mjpg?view=raw")
    try:
        assert s.headers["cross-origin-resource-policy"] == "same-origin"
        assert "frame-ancestors 'none'" in s.headers["content-security-policy"]
    finally:
        s.close()


# ---------------------------------------------------------------------- credentials
def test_session_cookie_is_signed_expiring_and_not_the_token(lite0_model, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    with running(lite0_model, token=TOKEN, access_log="true", session_hours=1) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        status, h, _ = request(d, "GET", f"/?token={TOKEN}")
        assert status == 303 and h["location"] == "/"
        attrs = [a.strip() for a in h["set-cookie"].split(";")]
        name, _, value = attrs[0].partition("=")
        assert name == "edge_saliency_session" and TOKEN not in value
        assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"} <= set(attrs)
        assert "Secure" not in attrs  # plain HTTP here (see the TLS test)
        assert request(d, "GET", "/api/latest", headers={"Cookie": attrs[0]})[0] == 200
        # the raw token as a cookie, a tampered cookie and an expired one are all refused
        expired = d.server.sessions.issue(now=time.time() - 7200)
        exp, nonce, mac = value.split(".")
        for bad in (TOKEN, f"{int(exp) + 99999}.{nonce}.{mac}", expired, "garbage"):
            assert request(d, "GET", "/api/latest", headers={"Cookie": f"edge_saliency_session={bad}"})[0] == 401, bad
        assert logged(caplog, "failed login from 127.0.0.1: invalid or expired session cookie", logging.WARNING)
        # the access log has the path, never the query (which carried the token)
        access = [r.getMessage() for r in caplog.records if '"GET /' in r.getMessage()]
        assert access and not [m for m in access if TOKEN in m]
        assert any('"GET / HTTP/1.1" 303' in m for m in access)
        assert not [r for r in caplog.records if TOKEN in r.getMessage()]


def test_failed_logins_are_logged_and_throttled_429(lite0_model, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    with running(lite0_model, token=TOKEN) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        for i in range(10):
            status, h, _ = request(d, "GET", "/api/latest", headers={"Authorization": f"Bearer wrong-guess-{i:04d}"})
            assert status == 401
        assert len(logged(caplog, "failed login from 127.0.0.1: wrong bearer token", logging.WARNING)) == 10
        assert logged(caplog, "127.0.0.1: 10 failed logins within 60 s: refusing it for 60 s", logging.WARNING)
        # locked out: even the right token waits; other clients are not affected
        status, h, body = request(d, "GET", "/api/latest", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 429 and 50 <= int(h["retry-after"]) <= 61 and b"failed logins" in body
        assert request(d, "GET", f"/?token={TOKEN}")[0] == 429
        assert request(d, "GET", "/healthz")[0] == 200  # no login needed there
        assert d.server.throttle.locked_for("127.0.0.2") == 0


def test_a_network_address_without_a_token_is_refused_or_gets_a_generated_one(lite0_model):
    from edge_saliency.serve.config import ConfigError, load_config
    from edge_saliency.serve.daemon import Daemon

    cfg = load_config(None, cli={"listen": "0.0.0.0:8080"}, env={})
    with pytest.raises(ConfigError, match="serves the network without a token: set token"):
        Daemon(cfg, model=lite0_model, source=object(), notifier=RecordingNotifier(None))  # refused before binding
    token, generated = Daemon._token(load_config(None, cli={"listen": "0.0.0.0:8080", "generate_token": "true"},
                                                 env={}), "0.0.0.0")
    assert generated and len(token) >= 32
    assert Daemon._token(load_config(None, cli={"listen": "[::1]:8080"}, env={}), "::1") == (None, False)
    assert ConfigError.exit_code == 78


# ---------------------------------------------------------------------- TLS
def make_cert(tmp_path, name):
    if shutil.which("openssl") is None:
        pytest.skip("openssl (the command) is needed to make a test certificate")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def tls_get(d, cafile, path="/healthz", headers=None):
    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection(*d.address, timeout=10, context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        der = conn.sock.getpeercert(binary_form=True)
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), der
    finally:
        conn.close()


def test_tls_serves_https_sets_secure_cookies_and_reloads_the_certificate(lite0_model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    cert1, key1 = make_cert(tmp_path, "first")
    with running(lite0_model, token=TOKEN, tls_cert=str(cert1), tls_key=str(key1)) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        assert d.url.startswith("https://127.0.0.1:")
        status, _, body, der1 = tls_get(d, cert1)
        assert status == 200
        status, h, _, _ = tls_get(d, cert1, f"/?token={TOKEN}")
        assert status == 303 and "Secure" in [a.strip() for a in h["set-cookie"].split(";")]
        # plain HTTP on the TLS port: the handshake fails, the server goes on
        assert raw(d, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] != 200
        # a new certificate in place of the old, then SIGHUP's reload: new connections get it
        cert2, key2 = make_cert(tmp_path, "second")
        shutil.copy(cert2, cert1)
        shutil.copy(key2, key1)
        d.reload()
        assert logged(caplog, "TLS certificate reloaded from")
        status, _, _, der2 = tls_get(d, cert2)
        assert status == 200 and der2 != der1
        # a broken file at reload keeps the old certificate
        cert1.write_text("not a certificate")
        d.reload()
        assert logged(caplog, "TLS reload failed, keeping the old certificate", logging.ERROR)
        assert tls_get(d, cert2)[0] == 200
        # the watchdog's self-probe speaks TLS too
        assert d.probe_http()


# ---------------------------------------------------------------------- liveness and isolation
def test_the_watchdog_stops_when_the_http_server_stops_answering(lite0_model, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    notifier = RecordingNotifier(watchdog_usec=400_000)
    with running(lite0_model, notifier=notifier) as d:
        assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") >= 3, 30)
        assert d.http_alive_t is not None
        d.server.shutdown()  # the accept loop ends; the socket stays open (connections hang in the backlog)
        time.sleep(4.5)  # the last answered probe is then older than the 3 s allowed
        pings = notifier.messages.count("WATCHDOG=1")
        time.sleep(2.0)
        assert notifier.messages.count("WATCHDOG=1") == pings
        assert d.loop.running and d.loop.health()[0]  # frames still flow: only HTTP is dead
        assert logged(caplog, "watchdog not fed: HTTP server not answering", logging.WARNING)


def test_a_configured_camera_missing_at_start_is_retried_never_replaced_by_the_demo(lite0_model):
    from edge_saliency.serve.config import load_config
    from edge_saliency.serve.daemon import Daemon

    for source in ("/dev/video97", None):  # a configured camera; unset under systemd (= camera 0)
        cli = {"listen": "127.0.0.1:0", "health_stale": "1"}
        if source:
            cli["source"] = source
        if source is None and os.path.exists("/dev/video0"):
            continue  # a real camera 0 here: nothing to show
        d = Daemon(load_config(None, cli=cli, env={}), model=lite0_model, notifier=RecordingNotifier(200_000))
        d.start()
        try:
            assert d.loop.source.kind == "webcam"
            bad = wait_for(lambda: (lambda r: r if r[0] == 503 and "no frames from" in r[1]["reason"] else None)(
                get_json(d, "/healthz")), 20)
            assert bad is not None and "reconnecting" in bad[1]["reason"], bad
            assert wait_for(lambda: d.loop.capture.stats["faults"] >= 1, 10)
            assert wait_for(lambda: d.watchdog_pings >= 2, 20)  # alive: systemd leaves it be
        finally:
            d.stop()


def test_explain_jobs_run_isolated_with_a_time_limit_and_keep_no_frames(lite0_model, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    with running(lite0_model, explain_timeout=1, explain_budget=20000, explain_queue=2) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        jobs = d.jobs
        assert wait_for(lambda: jobs.niced, 10)
        assert jobs.model is jobs.live_model  # no second session until a job needs one
        tid = next(t.native_id for t in threading.enumerate() if t.name == "explain-worker")
        assert os.getpriority(os.PRIO_PROCESS, tid) >= os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + 10
        status, _, body = request(d, "POST", "/api/explain", b'{"method": "rise"}', {"Content-Type": "application/json"})
        assert status == 202
        url = json.loads(body)["url"]
        t0 = time.monotonic()
        done = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(get_json(d, url)[1]), 60)
        assert done["state"] == "failed" and "time limit of 1 s (explain_timeout)" in done["error"]
        assert jobs.model is not jobs.live_model  # its own model session
        assert time.monotonic() - t0 < 30  # 20,000 queries would take many minutes here
        assert logged(caplog, "stopped after the time limit of 1 s", logging.WARNING)
        job = jobs.get(done["id"])
        assert job.snapshot is None and done["frame"] > 0  # the frame is let go, its id kept
        status, _, body = request(d, "POST", "/api/explain", b'{"method": "fastcam"}', {"Content-Type": "application/json"})
        url = json.loads(body)["url"]
        done = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(get_json(d, url)[1]), 60)
        assert done["state"] == "done" and jobs.get(done["id"]).snapshot is None
    from edge_saliency.serve.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="explain-budget: must be at most 20000"):
        load_config(None, cli={"explain_budget": "10000000"}, env={})


def test_frame_jpg_is_rendered_once_per_frame_and_view(lite0_model):
    with running(lite0_model, stream_fps=2) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        n = 12
        t0 = time.monotonic()
        ids = [int(request(d, "GET", "/api/frame.jpg?view=heatmap")[1]["x-frame-id"]) for _ in range(n)]
        elapsed = time.monotonic() - t0
        assert ids == sorted(ids)
        assert d.frames.renders <= 2 + elapsed * 2  # at most stream_fps renders a second, whatever is asked
        assert d.frames.renders < n
        before = d.frames.renders
        threads = [threading.Thread(target=request, args=(d, "GET", "/api/frame.jpg?view=lovi")) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert d.frames.renders - before <= 2


def test_the_viewer_cap_holds_under_concurrent_attaches(daemon):
    from edge_saliency.serve.streams import Streams

    streams = Streams(daemon.loop, daemon.make_renderer, daemon.views, 80, 5.0, 3)
    barrier = threading.Barrier(24)
    got = []

    def attach():
        barrier.wait()
        got.append(streams.try_attach("raw"))

    threads = [threading.Thread(target=attach) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sum(e is not None for e in got) == 3 and streams.viewers == 3
    finally:
        for e in got:
            if e is not None:
                e.detach()
        streams.close()


def test_a_finite_source_that_cannot_be_reopened_backs_off_and_logs_once(caplog):
    from edge_saliency.serve.camera_loop import CameraLoop
    from edge_saliency.pipeline.sources import SourceError

    class Gone:
        def describe(self):
            return "clip.mp4"

        def clone(self):
            return self

        def open(self):
            raise SourceError("clip.mp4: file not found")

    caplog.set_level(logging.INFO, logger="edge_saliency")
    eng = CameraLoop(object(), Gone(), replay=True)
    t0 = time.monotonic()
    assert [eng._restart_finite() for _ in range(3)] == [None] * 3
    assert time.monotonic() - t0 >= 0.25 + 0.5 + 1.0 - 0.05  # backoff, not 10 tries a second
    assert len(logged(caplog, "cannot reopen to replay it")) == 1


def test_the_watchdog_stops_when_inference_hangs(lite0_model, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")

    class Hanging:
        """The real model until `hang` is set; then predict() blocks (a stuck driver or runtime)."""

        def __init__(self, model):
            self.model = model
            self.hang = threading.Event()
            self.release = threading.Event()

        def __getattr__(self, name):
            return getattr(self.model, name)

        def predict(self, *a, **kw):
            if self.hang.is_set():
                self.release.wait(30)
            return self.model.predict(*a, **kw)

    model = Hanging(lite0_model)
    notifier = RecordingNotifier(watchdog_usec=400_000)
    with running(model, notifier=notifier) as d:
        assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") >= 3, 30)
        model.hang.set()
        time.sleep(2.0)
        pings = notifier.messages.count("WATCHDOG=1")
        time.sleep(2.0)
        try:
            assert notifier.messages.count("WATCHDOG=1") == pings  # HTTP answers, but the loop is stuck
            assert d.probe_http()  # HTTP itself still answers
            assert logged(caplog, "watchdog not fed: inference loop stuck", logging.WARNING)
        finally:
            model.release.set()
        assert wait_for(lambda: notifier.messages.count("WATCHDOG=1") > pings, 20)  # fed again once it moves


def test_host_policy_for_a_wildcard_bind_knows_the_machines_names_and_addresses():
    from edge_saliency.serve.security import HostPolicy, local_names

    names = local_names()
    pol = HostPolicy("0.0.0.0")
    hostname = socket.gethostname().lower()
    assert pol.allows(hostname) and pol.allows(f"{hostname}.local:8080") and pol.allows("localhost:8080")
    for addr in names:
        if ":" not in addr:
            assert pol.allows(f"{addr}:8080"), addr
    assert not pol.allows("attacker.example") and not pol.allows("") and not pol.allows(None)
    bound = HostPolicy("192.0.2.7")  # a specific address: that one, loopback, nothing else
    assert bound.allows("192.0.2.7:8080") and bound.allows("127.0.0.1") and not bound.allows(hostname + ".example")
    assert HostPolicy("::1").allows("[::1]:8080") and HostPolicy("127.0.0.1", ["*"]).allows("anything.example")


def test_tls_from_systemd_credentials(tmp_path):
    from edge_saliency.serve.config import ConfigError
    from edge_saliency.serve.security import load_tls

    cert, key = make_cert(tmp_path, "cred")
    creds = tmp_path / "creds"
    creds.mkdir()
    assert load_tls(None, None, env={"CREDENTIALS_DIRECTORY": str(creds)}) is None  # none given: plain HTTP
    shutil.copy(cert, creds / "tls.crt")
    shutil.copy(key, creds / "tls.key")
    tls = load_tls(None, None, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert tls is not None and tls.cert == str(creds / "tls.crt")
    with pytest.raises(ConfigError, match="TLS needs both tls_cert and tls_key"):
        load_tls(str(cert), None, env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_tls(str(tmp_path / "nope.pem"), str(key), env={})
