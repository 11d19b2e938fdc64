"""Reliability of `edge-saliency serve` over loopback (127.0.0.1 only; every loop bounded).

    python benchmarks/serve_reliability.py                      # full run (~4-6 min on 2 cores)
    python benchmarks/serve_reliability.py --load-s 20 --rss-frames 3000 --fuzz 200   # shorter

1. Leak: RSS (from /metrics) after 1,000 processed frames vs after --rss-frames, nothing connected.
2. Load: the daemon (a subprocess, synthetic source in --fast hand-off mode so inference is the
   bottleneck) runs idle for --idle-s, then with --viewers MJPEG viewers plus --rps requests/s on
   /api/latest for --load-s. Reports inference FPS idle vs under load and every error.
3. Fuzz: --fuzz malformed requests (seeded random methods, paths, queries, headers, bodies, raw
   garbage). Counts answers by status; any 5xx, hang or dead daemon is a failure.
4. Recovery: an in-process daemon whose camera is unplugged and plugged back --cycles times;
   /healthz must go 503 then 200 every time.

Model: EfficientNet-Lite0 exported at --input-size (default 96 px, to reach 10,000 frames in a few
minutes on a small machine; needs torch) unless --model is given.
Results: benchmarks/results/serve_reliability.json and .md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------- helpers
def get(host, port, path, timeout=10.0):
    return harness.http_get(host, port, path, timeout)


def metric(text: str, name: str) -> float | None:
    """The value of a series (summed over its labels: per-camera series carry camera="...")."""
    vals = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
    return sum(float(v) for v in vals) if vals else None


def scrape(host, port):
    status, body = get(host, port, "/metrics")
    text = body.decode()
    return {"processed": metric(text, "edge_saliency_frames_processed_total"),
            "rss": metric(text, "edge_saliency_process_rss_bytes"),
            "captured": metric(text, "edge_saliency_frames_captured_total")}


def export_small_model(size: int, out_dir: Path) -> Path:
    from export.build import ExportOptions, export_from_options

    out = out_dir / f"lite0_{size}.onnx"
    export_from_options(ExportOptions(out=str(out), input_size=(size, size)), log=lambda m: None)
    return out


class Viewer(threading.Thread):
    """Reads an MJPEG stream until told to stop; counts parts and errors."""

    def __init__(self, host, port, view, stop):
        super().__init__(daemon=True)
        self.host, self.port, self.view, self.stop = host, port, view, stop
        self.frames = 0
        self.errors: list[str] = []

    def run(self):
        try:
            s = socket.create_connection((self.host, self.port), timeout=15)
            s.sendall(f"GET /stream.mjpg?view={self.view} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, buf = buf.split(b"\r\n\r\n", 1)
            if b" 200 " not in head.split(b"\r\n")[0]:
                self.errors.append(head.split(b"\r\n")[0].decode())
                return
            while not self.stop.is_set():
                c = s.recv(262144)
                if not c:
                    if not self.stop.is_set():
                        self.errors.append("stream closed early")
                    break
                buf += c
                while True:
                    i = buf.find(b"Content-Length: ")
                    if i < 0:
                        break
                    j = buf.find(b"\r\n\r\n", i)
                    if j < 0:
                        break
                    n = int(buf[i + 16:buf.index(b"\r\n", i)])
                    if len(buf) < j + 4 + n + 2:
                        break
                    jpeg = buf[j + 4:j + 4 + n]
                    if jpeg[:2] != b"\xff\xd8" or jpeg[-2:] != b"\xff\xd9":
                        self.errors.append("broken JPEG part")
                    self.frames += 1
                    buf = buf[j + 4 + n + 2:]
            s.close()
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")


class Poller(threading.Thread):
    """GET /api/latest at a steady rate (keep-alive connection); counts answers and errors."""

    def __init__(self, host, port, rps, stop):
        super().__init__(daemon=True)
        self.host, self.port, self.rps, self.stop = host, port, rps, stop
        self.ok = 0
        self.errors: list[str] = []
        self.latency: list[float] = []

    def run(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        t0 = time.perf_counter()
        k = 0
        while not self.stop.is_set():
            due = t0 + k / self.rps
            k += 1
            d = due - time.perf_counter()
            if d > 0:
                time.sleep(d)
            try:
                t = time.perf_counter()
                conn.request("GET", "/api/latest")
                r = conn.getresponse()
                body = r.read()
                self.latency.append(time.perf_counter() - t)
                if r.status == 200 and json.loads(body)["frame"] > 0:
                    self.ok += 1
                else:
                    self.errors.append(f"HTTP {r.status}")
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        conn.close()


# ---------------------------------------------------------------------- fuzz
def fuzz_requests(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW", "get", "G\x00T", ""]
    paths = ["/", "/api/latest", "/api/explain", "/api/jobs/", "/api/jobs/" + "0" * 16, "/api/jobs/zz/map.png",
             "/stream.mjpg", "/metrics", "/healthz", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd",
             "/api/map.png", "/api/frame.jpg", "*", "http://evil/", "/\x7f\x01", "/a" * 1500, "/api/latest/"]
    queries = ["", "?view=raw", "?view=xray", "?view=%ff%fe", "?map=/etc/passwd", "?x=1", "?view=raw&view=lovi",
               "?" + "a=1&" * 50, "?token=" + "x" * 200, "?%", "?view"]
    versions = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTX/1.1", "", "HTTP/1.1 extra"]
    headers = [b"Content-Length: -1", b"Content-Length: 99999999999", b"Content-Length: abc",
               b"Transfer-Encoding: chunked", b"Content-Type: application/json", b"Authorization: Bearer x",
               b"Cookie: edge_saliency_token=\xff\xfe", b"X-Long: " + b"a" * 70000, b"NoColonHeader",
               b"Host: " + b"h" * 300, b"Connection: close"]
    bodies = [b"", b"{", b"[]", b'{"method": 1}', b'{"method": "rise", "class": -1}', b"\x00" * 100,
              json.dumps({"method": "fastcam", "class": None}).encode(), b"x" * 100000, b'{"method": "../../x"}']
    out = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.1:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) + b"\r\n\r\n")
            continue
        line = f"{rng.choice(methods)} {rng.choice(paths)}{rng.choice(queries)} {rng.choice(versions)}".encode("latin-1")
        hs = rng.sample(headers, rng.randrange(0, 4))
        body = rng.choice(bodies)
        if rng.random() < 0.5 and not any(h.startswith(b"Content-Length") for h in hs):
            hs.append(b"Content-Length: %d" % len(body))
        out.append(line + b"\r\n" + b"Host: 127.0.0.1\r\n" + b"".join(h + b"\r\n" for h in hs) + b"\r\n" + body)
    return out


def send_raw(host, port, data: bytes, timeout=10.0) -> int:
    """Status of the first response (0: closed without a status line; -1: timed out)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        buf = b""
        try:
            while b"\r\n" not in buf:
                c = s.recv(4096)
                if not c:
                    break
                buf += c
        except socket.timeout:
            return -1
        except ConnectionResetError:
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------------- recovery (in-process)
def recovery(model_path: Path, cycles: int) -> dict:
    from functools import partial

    from edge_saliency.pipeline.capture import Capture
    from edge_saliency.serve.config import load_config
    from edge_saliency.runtime.model import SaliencyModel
    from edge_saliency.serve.daemon import Daemon
    from edge_saliency.pipeline.sources import SourceError, SyntheticSource

    class Unpluggable(SyntheticSource):
        kind = "unpluggable"

        def __init__(self, spec="unpluggable", fps=30.0, size=(320, 240), plug=None):
            super().__init__(spec, fps, size)
            self.plug = plug or threading.Event()
            if plug is None:
                self.plug.set()

        def clone(self):
            c = Unpluggable(self.spec, self.fps, self.size, self.plug)
            c.index = self.index
            return c

        def open(self):
            if not self.plug.is_set():
                raise SourceError("unplugged")
            super().open()

        def read(self):
            return super().read() if self.plug.is_set() else None

    src = Unpluggable()
    src.open()
    cfg = load_config(None, cli={"listen": "127.0.0.1:0", "stale_after": "0.5", "health_stale": "2", "threads": "1"}, env={})
    d = Daemon(cfg, model=SaliencyModel(model_path, provider="cpu", threads=1), source=src)
    d.loop.capture_factory = partial(Capture, backoff=(0.25, 2.0))
    d.start()
    host, port = d.address
    rows = []

    def wait_status(want, limit=30.0):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < limit:
            if get(host, port, "/healthz")[0] == want:
                return time.perf_counter() - t0
            time.sleep(0.05)
        return None

    try:
        wait_status(200, 60)
        for i in range(cycles):
            src.plug.clear()
            down = wait_status(503)
            time.sleep(1.0 + i)  # gone for a while (longer each time: backoff grows)
            src.plug.set()
            up = wait_status(200)
            rows.append({"cycle": i + 1, "to_503_s": None if down is None else round(down, 2),
                         "gone_s": 1.0 + i, "to_200_s": None if up is None else round(up, 2),
                         "recovered": down is not None and up is not None})
        text = get(host, port, "/metrics")[1].decode()
        reconnects = metric(text, "edge_saliency_camera_reconnects_total")
    finally:
        d.stop()
    return {"cycles": rows, "recovered_every_time": all(r["recovered"] for r in rows), "reconnects": reconnects}


# ---------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--input-size", type=int, default=96)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--rps", type=float, default=50.0)
    ap.add_argument("--rss-frames", type=int, default=10000)
    ap.add_argument("--fuzz", type=int, default=500)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--views", default="fastcam", help="views the viewers watch, round robin (default: all the default view)")
    ap.add_argument("--out", default=str(RESULTS / "serve_reliability"))
    args = ap.parse_args()
    say = lambda m: print(m, flush=True)  # noqa: E731

    tmp = Path(tempfile.mkdtemp(prefix="serve-rel-"))
    model = Path(args.model) if args.model else export_small_model(args.input_size, tmp)
    say(f"model: {model}")
    (tmp / "c.toml").write_text(f'model = "{model}"\nsource = "synthetic"\nrealtime = false\nlisten = "127.0.0.1:0"\n'
                                f'threads = {args.threads}\nmax_viewers = {args.viewers + 8}\n'
                                # every client here is 127.0.0.1: the per-client cap is for real networks
                                f'max_client_connections = {args.viewers + 32}\nmax_connections = {args.viewers + 64}\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "serve", "--config", str(tmp / "c.toml")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    res: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
                 "model": f"EfficientNet-Lite0 at {args.input_size} px" if not args.model else str(model),
                 "settings": vars(args)}
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        if not m:
            raise SystemExit(f"daemon did not start: {line} {proc.stderr.read()[-2000:]}")
        host, port = m.group(1), int(m.group(2))
        say(f"daemon at {host}:{port}")
        rss_1000 = None

        def watch_rss():
            nonlocal rss_1000
            s = scrape(host, port)
            if rss_1000 is None and s["processed"] >= 1000:
                rss_1000 = s["rss"]
            return s

        # 1. leak: RSS after 1,000 and after --rss-frames frames, nothing else connected
        t0 = time.perf_counter()
        while True:
            s = watch_rss()
            if s["processed"] >= args.rss_frames or time.perf_counter() - t0 > 900:
                break
            time.sleep(0.5)
        res["rss"] = {"rss_1000_mb": round(rss_1000 / 2**20, 1), "frames": int(s["processed"]),
                      "rss_end_mb": round(s["rss"] / 2**20, 1), "growth_pct": round(100 * (s["rss"] / rss_1000 - 1), 1)}
        say(f"rss: {res['rss']}")

        # 2. idle FPS
        a = watch_rss()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.idle_s:
            time.sleep(0.5)
            watch_rss()
        b = watch_rss()
        idle_fps = (b["processed"] - a["processed"]) / (time.perf_counter() - t0)
        say(f"idle: {idle_fps:.1f} FPS")

        # 2. load
        stop = threading.Event()
        views = args.views.split(",")
        viewers = [Viewer(host, port, views[i % len(views)], stop) for i in range(args.viewers)]
        poller = Poller(host, port, args.rps, stop)
        for v in viewers:
            v.start()
        poller.start()
        time.sleep(2.0)  # everyone connected
        a = watch_rss()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.load_s:
            time.sleep(0.5)
            watch_rss()
        b = watch_rss()
        load_fps = (b["processed"] - a["processed"]) / (time.perf_counter() - t0)
        stop.set()
        for v in viewers:
            v.join(5)
        poller.join(5)
        errors = [e for v in viewers for e in v.errors] + poller.errors
        lat = sorted(poller.latency)
        res["load"] = {"idle_fps": round(idle_fps, 2), "load_fps": round(load_fps, 2),
                       "fps_drop_pct": round(100 * (1 - load_fps / idle_fps), 1),
                       "viewers": args.viewers, "viewer_frames": sum(v.frames for v in viewers),
                       "viewer_fps_each": round(sum(v.frames for v in viewers) / args.viewers / (args.load_s + 2), 2),
                       "latest_requests_ok": poller.ok, "latest_rps": round(poller.ok / (args.load_s + 2), 1),
                       "latest_p50_ms": round(1e3 * lat[len(lat) // 2], 1) if lat else None,
                       "latest_p99_ms": round(1e3 * lat[int(len(lat) * 0.99)], 1) if lat else None,
                       "errors": len(errors), "error_samples": errors[:5]}
        say(f"load: {res['load']}")

        res["rss"]["after_load_mb"] = round(watch_rss()["rss"] / 2**20, 1)

        # 4. fuzz
        counts: dict[str, int] = {}
        bad = []
        for i, data in enumerate(fuzz_requests(args.fuzz)):
            try:
                st = send_raw(host, port, data)
            except OSError as exc:
                st = -2
                bad.append(f"{type(exc).__name__} on request {i}")
            key = "no status line" if st == 0 else "timeout" if st == -1 else "connect error" if st == -2 else f"{st // 100}xx"
            counts[key] = counts.get(key, 0) + 1
            if st >= 500 or st < 0:
                bad.append(f"{st} for {data[:80]!r}")
        alive = proc.poll() is None and get(host, port, "/healthz")[0] == 200
        res["fuzz"] = {"requests": args.fuzz, "answers": counts, "bad": bad[:10], "daemon_healthy_after": alive}
        say(f"fuzz: {res['fuzz']}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    res["exit_code_on_sigterm"] = proc.returncode

    # 5. recovery
    res["recovery"] = recovery(model, args.cycles)
    say(f"recovery: {res['recovery']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    ld, rs, fz, rc = res["load"], res["rss"], res["fuzz"], res["recovery"]
    md = [
        "# serve reliability (loopback)", "",
        f"Command: `python benchmarks/serve_reliability.py {' '.join(sys.argv[1:])}`".rstrip(), "",
        f"Machine: {res['machine']}. Model: {res['model']}, ORT CPU, {args.threads} thread(s); source: synthetic "
        "640x480 in fast hand-off mode (inference-bound); stream_fps 15 per view.", "",
        "| check | result | target |", "|---|---|---|",
        f"| inference FPS idle -> with {ld['viewers']} MJPEG viewers + {args.rps:g} req/s /api/latest for {args.load_s:g} s "
        f"| {ld['idle_fps']} -> {ld['load_fps']} ({ld['fps_drop_pct']}% drop) | <= 10% |",
        f"| errors under load | {ld['errors']} | 0 |",
        f"| viewers' frames (views: {args.views}) | {ld['viewer_frames']} ({ld['viewer_fps_each']} FPS each) | |",
        f"| /api/latest answered | {ld['latest_requests_ok']} ({ld['latest_rps']} req/s, p50 {ld['latest_p50_ms']} ms, "
        f"p99 {ld['latest_p99_ms']} ms) | |",
        f"| RSS after 1,000 -> {rs['frames']:,} frames | {rs['rss_1000_mb']} MB -> {rs['rss_end_mb']} MB "
        f"({rs['growth_pct']:+}%); {rs['after_load_mb']} MB after the load phase | within 10% |",
        f"| camera unplugged/replugged {len(rc['cycles'])} times | recovered {sum(r['recovered'] for r in rc['cycles'])}"
        f"/{len(rc['cycles'])} ({rc['reconnects']:.0f} reconnects) | every time |",
        f"| HTTP fuzz, {fz['requests']} malformed requests | {fz['answers']}; 5xx/hangs: {len(fz['bad'])}; healthy after: "
        f"{fz['daemon_healthy_after']} | no 5xx, no crash |",
        f"| exit code on SIGTERM | {res['exit_code_on_sigterm']} | 0 |",
        "", "Recovery cycles (seconds from unplug to /healthz 503, and from replug to 200):", "",
        "| cycle | to 503 | gone for | to 200 |", "|---|---|---|---|",
        *[f"| {r['cycle']} | {r['to_503_s']} | {r['gone_s']} | {r['to_200_s']} |" for r in rc["cycles"]], "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    say("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
