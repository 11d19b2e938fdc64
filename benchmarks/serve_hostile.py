"""`edge-saliency serve` against hostile clients on loopback (127.0.0.1 only; every loop bounded in
count and time), for one checkout of the code or for two side by side.

    python benchmarks/serve_hostile.py                                   # this checkout only
    git worktree add /tmp/i16-before 4ae59c1
    python benchmarks/serve_hostile.py --before /tmp/i16-before          # before vs this checkout

The daemon is a subprocess (`python -m edge_saliency serve`, PYTHONPATH = the checkout under
test) with a synthetic 30 FPS source, EfficientNet-Lite0 on 1 thread, and no token (the shipped
default), as the issue measured it. Scenarios:

  headers   10 clients each send 99 header lines of 60 KB and never finish: daemon RSS before,
            peak, and 3 s after they closed
  idle      300 idle connected sockets: daemon threads before / with them; can a normal client
            still get /healthz?
  slowloris one client sends a header line every 5 s: how long the server keeps it (cut at 45 s)
  emfile    a daemon with RLIMIT_NOFILE 160 and 200 idle sockets from 20 loopback addresses:
            accept errors, CPU, FPS, /metrics and /healthz status meanwhile
  crosssite POST /api/explain with no Content-Type and a foreign Origin; an empty form POST
  host      GET /api/frame.jpg with Host: attacker.example
  small     Content-Length: ², two Content-Lengths, 60,000 nested '[', SIGHUP
  explain   FPS idle vs with 5 queued RISE jobs (budget 1000)
  framejpg  FPS idle vs 4 clients polling /api/frame.jpg?view=heatmap

The machine is shared (2 cores, other jobs running): FPS figures are medians of 1 s windows and
noisy. Results: benchmarks/results/serve_hostile.json and .md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------- the daemon under test
class Daemon:
    def __init__(self, code: Path, model: Path, workdir: Path, nofile: int | None = None):
        self.code, self.model, self.workdir = code, model, workdir
        cfg = workdir / "c.toml"
        cfg.write_text(f'model = "{model}"\nsource = "synthetic"\nlisten = "127.0.0.1:0"\nthreads = 1\n'
                       'explain_budget = 1000\n')
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "EDGE_SALIENCY_TOKEN")}
        env.update({"PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"})

        def limits():
            if nofile:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.err_path = workdir / "stderr.log"
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "serve", "--config", str(cfg)],
                                     cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     preexec_fn=limits)
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"daemon did not start: {line!r} {self.err_path.read_text()[-2000:]}")
        self.port = int(m.group(1))
        self.ps = psutil.Process(self.proc.pid)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end and self.get("/healthz")[0] != 200:
            time.sleep(0.2)
        self._mconn: http.client.HTTPConnection | None = None
        self.settle()

    def settle(self, seconds=20.0, tolerance_mb=2.0) -> float:
        """Wait (bounded) until RSS holds still for 2 s: start-up growth is not the attack's."""
        t_end = time.monotonic() + seconds
        prev = self.rss_mb()
        while time.monotonic() < t_end:
            time.sleep(2.0)
            cur = self.rss_mb()
            if abs(cur - prev) < tolerance_mb:
                return cur
            prev = cur
        return prev

    def get(self, path, headers=None, timeout=5.0, method="GET", body=None, src="127.0.0.250"):
        """One request on a fresh connection, from another loopback address than the attackers'."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(src, 0))
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__, b""
        finally:
            c.close()

    def processed(self) -> float | None:
        """The frame counter, over one kept-alive connection (made before any attack)."""
        for _ in range(2):
            try:
                if self._mconn is None:
                    self._mconn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5,
                                                             source_address=("127.0.0.251", 0))
                self._mconn.request("GET", "/metrics")
                r = self._mconn.getresponse()
                status, body = r.status, r.read()
                break
            except (OSError, http.client.HTTPException):
                if self._mconn is not None:
                    self._mconn.close()
                self._mconn = None
        else:
            return None
        if status != 200:
            return None
        m = re.search(rb"^edge_saliency_frames_processed_total ([0-9.e+]+)$", body, re.M)
        return float(m.group(1)) if m else None

    def fps_windows(self, seconds: float) -> list[float]:
        """Frames processed per 1 s window (from the daemon's own counter), for `seconds`."""
        out = []
        prev, t_prev = self.processed(), time.monotonic()
        t_end = t_prev + seconds
        while time.monotonic() < t_end:
            time.sleep(1.0)
            cur, t = self.processed(), time.monotonic()
            if cur is not None and prev is not None:
                out.append((cur - prev) / (t - t_prev))
            prev, t_prev = cur, t
        return out

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 1e6

    def threads(self) -> int:
        return self.ps.num_threads()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.err.close()
        return self.proc.returncode

    @property
    def log(self) -> str:
        return self.err_path.read_text(errors="replace")


def median(xs):
    return round(statistics.median(xs), 1) if xs else None


def kept(idle, busy):
    """FPS under load as a % of FPS idle (medians of the 1 s windows)."""
    return round(100 * statistics.median(busy) / statistics.median(idle)) if idle and busy else None


def connect(port, src="127.0.0.1", timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def raw_status(port, data: bytes, timeout=10.0):
    try:
        with connect(port, timeout=timeout) as s:
            s.sendall(data)
            resp = b""
            while b"\r\n" not in resp:
                c = s.recv(4096)
                if not c:
                    break
                resp += c
        return int(resp.split(b" ", 2)[1]) if resp else "closed"
    except (OSError, ValueError, IndexError) as exc:
        return type(exc).__name__


# ---------------------------------------------------------------------- scenarios
def s_headers(d: Daemon) -> dict:
    """10 clients x 99 header lines of 60 KB, never finished."""
    d.processed()  # the metrics connection exists before the attack
    base = d.rss_mb()
    peak = [base]
    stop = threading.Event()
    socks, answers = [], []

    def sample():
        while not stop.is_set():
            peak.append(d.rss_mb())
            time.sleep(0.05)

    def client(i):
        try:
            s = connect(d.port, timeout=10)
        except OSError as exc:
            answers.append(type(exc).__name__)
            return
        socks.append(s)
        try:
            s.sendall(b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            line = b"X-Pad: " + b"a" * 60000 + b"\r\n"
            for _ in range(99):
                s.sendall(line)
            answers.append("sent all")
        except OSError as exc:
            answers.append(f"cut: {type(exc).__name__}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    time.sleep(3.0)
    held = d.rss_mb()
    statuses = []
    for s in socks:
        try:
            s.settimeout(0.5)
            r = s.recv(64)
            statuses.append(r.split(b" ")[1].decode() if r.startswith(b"HTTP") else "closed" if not r else "?")
        except socket.timeout:
            statuses.append("no answer")
        except OSError as exc:
            statuses.append(type(exc).__name__)
        s.close()
    time.sleep(3.0)
    stop.set()
    after = d.rss_mb()
    return {"rss_before_mb": round(base, 1), "rss_peak_mb": round(max(peak), 1), "rss_held_mb": round(held, 1),
            "rss_after_close_mb": round(after, 1), "held_delta_mb": round(held - base, 1),
            "after_close_delta_mb": round(after - base, 1), "clients": sorted(set(answers)),
            "server_answers": {k: statuses.count(k) for k in set(statuses)}}


def s_idle(d: Daemon, n=300) -> dict:
    before = d.threads()
    socks, refused = [], 0
    for i in range(n):
        try:
            socks.append(connect(d.port, timeout=3))
        except OSError:
            refused += 1
    time.sleep(2.0)
    during = d.threads()
    t0 = time.monotonic()
    health = d.get("/healthz", timeout=10)[0]
    health_s = round(time.monotonic() - t0, 3)
    answered = 0
    for s in socks:
        s.settimeout(0.01)
        try:
            if s.recv(16).startswith(b"HTTP/1.1 503"):
                answered += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    time.sleep(2.0)
    return {"sockets": n, "connect_failed": refused, "answered_503": answered, "threads_before": before,
            "threads_with_idle_sockets": during, "threads_after": d.threads(), "healthz_meanwhile": health,
            "healthz_seconds": health_s}


def s_slowloris(d: Daemon, every=5.0, cap=45.0) -> dict:
    s = connect(d.port, timeout=every)
    s.sendall(b"GET /api/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    outcome, i = "still open at the cap", 0
    while time.monotonic() - t0 < cap:
        try:
            s.settimeout(every)
            r = s.recv(4096)
            outcome = f"answered {r.split(b' ')[1].decode()}" if r.startswith(b"HTTP") else "closed"
            break
        except socket.timeout:
            pass
        except OSError as exc:
            outcome = type(exc).__name__
            break
        try:
            s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            i += 1
        except OSError as exc:
            outcome = f"closed ({type(exc).__name__})"
            break
    held = round(time.monotonic() - t0, 1)
    s.close()
    return {"line_every_s": every, "kept_open_s": held, "lines_sent": i, "outcome": outcome, "cap_s": cap}


def s_emfile(code: Path, model: Path, work: Path, nofile=160, n_addr=20, per_addr=10) -> dict:
    d = Daemon(code, model, work, nofile=nofile)
    try:
        idle_fps = median(d.fps_windows(5))  # also opens the metrics connection before the flood
        d.ps.cpu_percent(None)
        time.sleep(3)
        cpu_idle = d.ps.cpu_percent(None)
        socks, failed = [], 0
        for a in range(n_addr):
            for _ in range(per_addr):
                try:
                    socks.append(connect(d.port, src=f"127.0.0.{a + 2}", timeout=2))
                    time.sleep(0.01)
                except OSError:
                    failed += 1
        time.sleep(1.5)
        d.ps.cpu_percent(None)
        fps = d.fps_windows(5)
        cpu = d.ps.cpu_percent(None)
        metrics = d.get("/metrics", timeout=5)[0]  # new connections from a normal client meanwhile
        health = d.get("/healthz", timeout=5)[0]
        for s in socks:
            s.close()
        time.sleep(2.0)
        health_after = d.get("/healthz", timeout=5)[0]
        log = d.log
    finally:
        rc = d.stop()
    return {"nofile": nofile, "sockets": n_addr * per_addr, "connect_failed": failed, "fps_idle": idle_fps,
            "fps_with_sockets": median(fps), "cpu_idle_pct": round(cpu_idle), "cpu_with_sockets_pct": round(cpu),
            "metrics_status": metrics, "healthz_status": health, "healthz_after_close": health_after,
            "emfile_log_lines": log.count("Too many open files"), "exit_code": rc,
            "emfile_log_sample": [ln[:200] for ln in log.splitlines() if "Too many open files" in ln][:3]}


def s_crosssite(d: Daemon) -> dict:
    no_ctype = d.get("/api/explain", {"Origin": "http://evil.example"}, method="POST", body=b"")[0]
    form = d.get("/api/explain", {"Content-Type": "application/x-www-form-urlencoded"}, method="POST", body=b"")[0]
    img = d.get("/api/frame.jpg", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})[0]
    return {"post_no_content_type_foreign_origin": no_ctype, "post_empty_form": form, "cross_site_img_fetch": img}


def s_host(d: Daemon) -> dict:
    return {"frame_jpg_host_attacker": d.get("/api/frame.jpg", {"Host": "attacker.example"})[0],
            "frame_jpg_host_127": d.get("/api/frame.jpg", {"Host": "127.0.0.1"})[0]}


def s_small(d: Daemon) -> dict:
    p = d.port
    post = b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    out = {"content_length_superscript": raw_status(p, post + "Content-Length: ²\r\n\r\n{}".encode("latin-1")),
           "content_length_twice": raw_status(p, post + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
           "nested_60000": d.get("/api/explain", {"Content-Type": "application/json"}, method="POST",
                                 body=b"[" * 60000, timeout=10)[0]}
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    out["sighup_alive"] = d.proc.poll() is None
    out["sighup_exit_code"] = d.proc.poll()
    out["tracebacks_in_log"] = d.log.count("Traceback")
    return out


def s_explain(d: Daemon) -> dict:
    idle = d.fps_windows(10)
    codes = [d.get("/api/explain", {"Content-Type": "application/json"}, method="POST",
                   body=b'{"method": "rise"}')[0] for _ in range(5)]
    time.sleep(1.0)
    busy = d.fps_windows(20)
    return {"fps_idle": median(idle), "fps_with_jobs": median(busy), "fps_kept_pct": kept(idle, busy),
            "jobs_accepted": codes.count(202),
            "statuses": codes}


def s_framejpg(d: Daemon, clients=4, seconds=15) -> dict:
    idle = d.fps_windows(8)
    stop = threading.Event()
    counts = [0] * clients

    def poll(i):
        while not stop.is_set():
            if d.get("/api/frame.jpg?view=heatmap", timeout=5)[0] == 200:
                counts[i] += 1

    ts = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(clients)]
    for t in ts:
        t.start()
    busy = d.fps_windows(seconds)
    stop.set()
    for t in ts:
        t.join(10)
    return {"fps_idle": median(idle), "fps_with_pollers": median(busy), "fps_kept_pct": kept(idle, busy),
            "responses": sum(counts),
            "responses_per_s": round(sum(counts) / seconds, 1)}


SCENARIOS = ("host", "crosssite", "small", "headers", "idle", "slowloris", "framejpg", "explain", "emfile")
FPS_SCENARIOS = ("framejpg", "explain")  # noisy: repeated, before and after interleaved (--repeat)


def commit_of(code: Path) -> str:
    return subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def run_one(code: Path, model: Path, name: str) -> dict:
    """One scenario on a fresh daemon: no scenario's leftovers (held memory, jobs) bias the next."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(code, model, Path(tmp))
        try:
            t0 = time.monotonic()
            out = globals()[f"s_{name}"](d)
            out["seconds"] = round(time.monotonic() - t0, 1)
        finally:
            d.stop()
    return out


def run_interleaved(codes: dict, model: Path, names: list[str], repeat: int, runs: dict) -> None:
    """FPS scenarios: before, after, before, after... `repeat` times; medians of each figure."""
    for name in names:
        rounds = {label: [] for label in codes}
        for i in range(repeat):
            for label, code in codes.items():
                r = run_one(code, model, name)
                rounds[label].append(r)
                print(f"  {label} {name} #{i + 1}: {json.dumps(r)}", flush=True)
        for label, rs in rounds.items():
            merged = {k: median([r[k] for r in rs if isinstance(r.get(k), (int, float))])
                      for k in rs[0] if isinstance(rs[0][k], (int, float))}
            merged["rounds"] = len(rs)
            merged["all"] = rs
            runs[label][name] = merged


def run_code(code: Path, model: Path, only: list[str]) -> dict:
    out = {"code": str(code), "commit": commit_of(code)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in [s for s in only if s != "emfile"]:
            out[name] = run_one(code, model, name)
            print(f"  {name}: {json.dumps(out[name])}", flush=True)
        if "emfile" in only:
            sub = work / "emfile"
            sub.mkdir()
            out["emfile"] = s_emfile(code, model, sub)
            print(f"  emfile: {json.dumps(out['emfile'])}", flush=True)
    return out


# ---------------------------------------------------------------------- report
ROWS = [
    ("headers", "10 clients x 99 header lines of 60 KB: RSS held (MB over idle)", lambda r: f"+{r['held_delta_mb']}"),
    ("headers", "  same: RSS peak (MB)", lambda r: r["rss_peak_mb"]),
    ("headers", "  same: RSS 3 s after they closed (MB over idle)", lambda r: f"+{r['after_close_delta_mb']}"),
    ("headers", "  same: what the server answered", lambda r: ", ".join(f"{k} x{v}" for k, v in sorted(r["server_answers"].items()))),
    ("idle", "300 idle sockets: daemon threads (before -> with them)", lambda r: f"{r['threads_before']} -> {r['threads_with_idle_sockets']}"),
    ("idle", "  same: refused at once with 503", lambda r: r["answered_503"]),
    ("idle", "  same: /healthz from a normal client meanwhile", lambda r: f"{r['healthz_meanwhile']} ({r['healthz_seconds']} s)"),
    ("slowloris", "slowloris (a header line every 5 s): socket kept", lambda r: f"{r['kept_open_s']} s, {r['outcome']}"),
    ("emfile", "RLIMIT_NOFILE 160 + 200 idle sockets: CPU % (idle -> with them)", lambda r: f"{r['cpu_idle_pct']} -> {r['cpu_with_sockets_pct']}"),
    ("emfile", "  same: FPS (idle -> with them)", lambda r: f"{r['fps_idle']} -> "
     + (str(r["fps_with_sockets"]) if r["fps_with_sockets"] is not None else "n/a (/metrics failed)")),
    ("emfile", "  same: /metrics, /healthz meanwhile", lambda r: f"{r['metrics_status']}, {r['healthz_status']}"),
    ("emfile", "  same: 'Too many open files' log lines", lambda r: r["emfile_log_lines"]),
    ("crosssite", "POST /api/explain, no Content-Type, Origin: evil.example", lambda r: r["post_no_content_type_foreign_origin"]),
    ("crosssite", "POST /api/explain, empty form", lambda r: r["post_empty_form"]),
    ("crosssite", "cross-site <img> fetch of /api/frame.jpg", lambda r: r["cross_site_img_fetch"]),
    ("host", "GET /api/frame.jpg with Host: attacker.example", lambda r: r["frame_jpg_host_attacker"]),
    ("small", "Content-Length: ²", lambda r: r["content_length_superscript"]),
    ("small", "two Content-Length headers", lambda r: r["content_length_twice"]),
    ("small", "60,000 nested [", lambda r: r["nested_60000"]),
    ("small", "SIGHUP: daemon alive after", lambda r: "yes" if r["sighup_alive"] else f"no (exit {r['sighup_exit_code']})"),
    ("small", "tracebacks in the daemon's log", lambda r: r["tracebacks_in_log"]),
    ("explain", "5 RISE jobs (budget 1000): FPS idle -> with jobs", lambda r: f"{r['fps_idle']} -> {r['fps_with_jobs']}"),
    ("explain", "  same: FPS kept (%)", lambda r: r["fps_kept_pct"]),
    ("framejpg", "4 clients polling /api/frame.jpg: FPS idle -> with them", lambda r: f"{r['fps_idle']} -> {r['fps_with_pollers']}"),
    ("framejpg", "  same: FPS kept (%)", lambda r: r["fps_kept_pct"]),
    ("framejpg", "  same: frames served per second", lambda r: r["responses_per_s"]),
]


def table(runs: dict) -> str:
    names = list(runs)
    lines = ["| scenario | " + " | ".join(f"{n} ({runs[n]['commit']})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for key, label, fmt in ROWS:
        cells = []
        for n in names:
            r = runs[n].get(key)
            try:
                cells.append(str(fmt(r)) if r else "-")
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export_model(out_dir: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from export.build import ExportOptions, export_from_options

    out = out_dir / "efficientnet_lite0.onnx"
    if not out.exists():
        export_from_options(ExportOptions(out=str(out)), log=lambda m: None)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a checkout of the code before (e.g. a git worktree of 4ae59c1)")
    ap.add_argument("--model", type=Path, help="edge-saliency ONNX (default: Lite0 exported once, needs torch)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of: {', '.join(SCENARIOS)}")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the FPS scenarios (framejpg, explain), before "
                    "and after interleaved; medians (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true", help="print, do not write benchmarks/results/")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    args = ap.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "serve_hostile.json").read_text())
        return write_md(saved["meta"], saved["runs"])
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - set(SCENARIOS)
    if bad:
        sys.exit(f"serve_hostile.py: unknown scenario {sorted(bad)[0]!r}; known: {', '.join(SCENARIOS)}")
    cache = Path(tempfile.gettempdir()) / "edge_saliency_hostile"
    cache.mkdir(exist_ok=True)
    model = args.model or export_model(cache)
    runs = {}
    codes = {name: code.resolve() for name, code in ((("before", args.before),) if args.before else ())
             + (("after", ROOT),)}
    once = [s for s in only if s not in FPS_SCENARIOS]
    for name, code in codes.items():
        print(f"== {name}: {code}", flush=True)
        runs[name] = run_code(code, model, once)
    fps = [s for s in only if s in FPS_SCENARIOS]
    if fps:
        print(f"== {', '.join(fps)}: {args.repeat} rounds, {' / '.join(codes)} interleaved", flush=True)
        run_interleaved(codes, model, fps, max(1, args.repeat), runs)
    print(table(runs))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": model.name,
                "command": "python benchmarks/serve_hostile.py " + " ".join(sys.argv[1:]), "repeat": args.repeat}
        (RESULTS / "serve_hostile.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
        write_md(meta, runs)


def write_md(meta: dict, runs: dict) -> None:
    notes = (
        "\n\nNotes. Before, the EMFILE row's 'n/a' is /metrics itself failing (the FPS is read from it): it "
        "answers 500, 'Too many open files' opening /proc/<pid>/stat, and new connections time out. After, "
        "the connection cap (64, and 64 under RLIMIT_NOFILE) keeps accept() from reaching EMFILE at all; the "
        "back-off on EMFILE itself is checked by tests/integration/test_serve_security.py. The idle-socket and EMFILE "
        "rows' normal client comes from another loopback address (127.0.0.250) than the attackers. Explain "
        "jobs and frame.jpg pollers still cost some FPS after: on 2 shared cores the nice +10 worker and the "
        "benchmark's own polling clients still take CPU time from the live loop; what changed is that a job "
        "is bounded (explain_timeout, budget cap) and frame.jpg is rendered once per frame and view whatever "
        "the number of clients. The FPS and CPU rows move a lot with the machine's other load: an earlier "
        "run on a busier machine is in this file's git history.\n")
    (RESULTS / "serve_hostile.md").write_text(
        "# serve_hostile: the daemon against hostile clients on loopback\n\n"
        f"`{meta['command']}` on {meta['cpus']} shared CPUs ({meta['machine']}, Python {meta['python']}), "
        f"{meta['date']}. Daemon: synthetic 30 FPS source, {meta['model']} on 1 thread, no token, default "
        "limits. The machine is shared with other jobs: FPS and CPU figures are noisy (medians of 1 s "
        f"windows; the explain and frame.jpg rows: medians of {meta.get('repeat', 1)} rounds, before and after "
        "interleaved; the other rows one run each).\n\n" + table(runs) + notes)
    print(f"wrote {RESULTS / 'serve_hostile.md'}")

if __name__ == "__main__":
    main()
