"""The device side within a Raspberry Pi Zero 2 W's means: 1 CPU core and 512 MB of memory, headless.

    python benchmarks/pi_limits.py --model m.onnx [--seconds 60] [--mem-mb 512] [--core 0]

Runs, each as its own process pinned to one core (`taskset -c CORE`) inside a memory limit:
  1. imports: RSS after importing the device side (cv2, onnxruntime, numpy, edge_saliency's run and
     serve modules), and after loading the model too;
  2. `edge-saliency run --headless` on the live synthetic source for --seconds;
  3. `edge-saliency serve` on the synthetic source for --seconds with one MJPEG viewer and
     /api/latest polled twice a second, then SIGTERM;
and asserts each keeps running to the end (run: exit 0 with its summary; serve: /healthz 200
throughout, exit 0 on SIGTERM), is never OOM-killed, stays under the limit, and its RSS does not
grow in the steady state (median of the last third vs the middle third, +16 MB at most).

The memory limit, the first that works here: `systemd-run --scope -p MemoryMax=` (systemd is
PID 1), a cgroup v2 child group (memory.max), a cgroup v1 memory group (memory.limit_in_bytes), or
`prlimit --as` (address space: a much cruder bound). Which one was used is in the results.
Results: benchmarks/results/pi_limits.json and .md. Needs root for the cgroup methods.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MB = 1 << 20
GROWTH_MB = 16.0  # allowed steady-state RSS growth (allocator noise, JPEG buffers)


# ---------------------------------------------------------------- memory limits
@dataclass
class Limit:
    method: str  # systemd-run | cgroup2 | cgroup1 | prlimit-as
    mem_mb: int
    core: int
    cgroup: Path | None = None
    notes: list = field(default_factory=list)

    def wrap(self, cmd: list[str]) -> list[str]:
        pinned = ["taskset", "-c", str(self.core)] + cmd
        if self.method == "systemd-run":
            return ["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={self.mem_mb}M",
                    "-p", "MemorySwapMax=0"] + pinned
        if self.method == "prlimit-as":
            return ["prlimit", f"--as={self.mem_mb * MB}"] + pinned
        return pinned

    def preexec(self):
        """Runs in the child before exec: join the cgroup (the v1/v2 methods)."""
        if self.cgroup is None:
            return None
        procs = str(self.cgroup / "cgroup.procs")

        def join():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        return join

    def oom_kills(self) -> int | None:
        """OOM kills inside the group so far (None where the method cannot tell)."""
        if self.cgroup is None:
            return None
        try:
            if self.method == "cgroup2":
                text = (self.cgroup / "memory.events").read_text()
                m = re.search(r"^oom_kill (\d+)", text, re.MULTILINE)
                return int(m.group(1)) if m else 0
            text = (self.cgroup / "memory.oom_control").read_text()
            m = re.search(r"^oom_kill (\d+)", text, re.MULTILINE)
            return int(m.group(1)) if m else int((self.cgroup / "memory.failcnt").read_text() != "0\n")
        except OSError:
            return None

    def peak_mb(self) -> float | None:
        """The group's peak memory (RSS + page cache the group touched), MB."""
        if self.cgroup is None:
            return None
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            p = self.cgroup / name
            if p.exists():
                try:
                    return int(p.read_text()) / MB
                except (OSError, ValueError):
                    return None
        return None

    def reset_peak(self) -> None:
        if self.cgroup is not None and (self.cgroup / "memory.max_usage_in_bytes").exists():
            try:
                (self.cgroup / "memory.max_usage_in_bytes").write_text("0")
            except OSError:
                pass

    def close(self) -> None:
        if self.cgroup is not None:
            try:
                self.cgroup.rmdir()
            except OSError as exc:
                self.notes.append(f"could not remove {self.cgroup}: {exc}")


def _own_cgroup(controller: str | None) -> str | None:
    """This process's cgroup path: the v2 entry ('0::/x') or the v1 entry of a controller."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, ctrls, path = line.split(":", 2)
        if controller is None and num == "0" and ctrls == "":
            return path
        if controller is not None and controller in ctrls.split(","):
            return path
    return None


def _systemd_is_pid1() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd" and shutil.which("systemd-run") is not None
    except OSError:
        return False


def make_limit(mem_mb: int, core: int, tried: list[str] | None = None) -> Limit:
    """The first memory-limit method that works here (see the module doc)."""
    tried = tried if tried is not None else []
    tag = f"edge-saliency-limits-{os.getpid()}"
    if _systemd_is_pid1():
        probe = subprocess.run(["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={mem_mb}M", "true"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return Limit("systemd-run", mem_mb, core)
        tried.append(f"systemd-run: {probe.stderr.strip()[:120]}")
    else:
        tried.append("systemd-run: systemd is not PID 1")
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists():
        own = _own_cgroup(None)
        try:
            parent = v2 / own.lstrip("/") if own else v2
            if "memory" not in (parent / "cgroup.controllers").read_text().split():
                raise OSError("the memory controller is not available to this cgroup")
            group = parent / tag
            group.mkdir()
            try:
                (group / "memory.max").write_text(str(mem_mb * MB))
                if (group / "memory.swap.max").exists():
                    (group / "memory.swap.max").write_text("0")
            except OSError:
                group.rmdir()
                raise
            return Limit("cgroup2", mem_mb, core, group)
        except (OSError, TypeError) as exc:
            tried.append(f"cgroup2: {exc}")
    else:
        tried.append("cgroup2: /sys/fs/cgroup is not a cgroup v2 mount")
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "cgroup.procs").exists():
        own = _own_cgroup("memory") or "/"
        try:
            group = v1 / own.lstrip("/") / tag
            group.mkdir()
            try:
                (group / "memory.limit_in_bytes").write_text(str(mem_mb * MB))
                if (group / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit either
                    (group / "memory.memsw.limit_in_bytes").write_text(str(mem_mb * MB))
            except OSError:
                group.rmdir()
                raise
            return Limit("cgroup1", mem_mb, core, group)
        except OSError as exc:
            tried.append(f"cgroup1: {exc}")
    else:
        tried.append("cgroup1: no memory controller mount")
    if shutil.which("prlimit"):
        return Limit("prlimit-as", mem_mb, core, notes=["address-space limit: counts reserved virtual memory, "
                                                        "not RSS; far stricter than a real 512 MB device"])
    raise RuntimeError("no way to limit memory here: " + "; ".join(tried))


# ---------------------------------------------------------------- one limited process
class Sampler:
    """RSS of a process every `every` s (psutil), until stopped."""

    def __init__(self, pid: int, every: float = 0.5):
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (t, rss MB)
        self.affinity: list[int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss
                for child in self.proc.children(recursive=True):  # taskset/prlimit exec; systemd-run forks
                    rss = max(rss, child.memory_info().rss)
                self.samples.append((time.monotonic() - self.t0, rss / MB))
                if self.affinity is None:
                    self.affinity = sorted(self._target().cpu_affinity())
            except psutil.Error:
                pass
            self._stop.wait(self.every)

    def _target(self):
        kids = self.proc.children(recursive=True)
        return kids[-1] if kids else self.proc

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)

    def stats(self) -> dict:
        rss = [r for _, r in self.samples]
        if not rss:
            return {"samples": 0}
        third = max(1, len(rss) // 3)
        middle, last = rss[third:2 * third] or rss, rss[-third:]
        return {"samples": len(rss), "peak_mb": round(max(rss), 1), "first_mb": round(rss[0], 1),
                "steady_mb": round(statistics.median(last), 1),
                "growth_mb": round(statistics.median(last) - statistics.median(middle), 1),
                "affinity": self.affinity}


def device_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "NOTIFY_SOCKET")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("OMP_NUM_THREADS", None)  # what a user gets: ORT's own default thread count
    return env


IMPORTS = """
import json, psutil, sys
p = psutil.Process()
import numpy, cv2, onnxruntime
import edge_saliency.pipeline.live, edge_saliency.serve.daemon, edge_saliency.serve.http, edge_saliency.serve.streams
a = p.memory_info().rss
out = {"import_mb": a / 2**20, "torch": "torch" in sys.modules}
if len(sys.argv) > 1:
    from edge_saliency.runtime.model import SaliencyModel
    m = SaliencyModel(sys.argv[1])
    import numpy as np
    m.predict(np.zeros((480, 640, 3), np.uint8))
    out["model_mb"] = p.memory_info().rss / 2**20
    out["threads"] = p.num_threads()
print(json.dumps(out))
"""


def measure_imports(limit: Limit, model: str) -> dict:
    cmd = limit.wrap([sys.executable, "-c", IMPORTS, model])
    p = subprocess.run(cmd, capture_output=True, text=True, env=device_env(), preexec_fn=limit.preexec(),
                       timeout=600)
    if p.returncode != 0:
        return {"ok": False, "error": (p.stderr.strip().splitlines() or ["(no output)"])[-1][:300],
                "rc": p.returncode}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {"ok": not out["torch"], "import_mb": round(out["import_mb"], 1),
            "model_loaded_mb": round(out["model_mb"], 1), "process_threads": out["threads"],
            "torch_imported": out["torch"]}


def run_loop(limit: Limit, model: str, seconds: float) -> dict:
    cmd = limit.wrap([sys.executable, "-m", "edge_saliency", "run", "--model", model, "--source", "synthetic",
                      "--headless", "--duration", str(seconds)])
    limit.reset_peak()
    oom0 = limit.oom_kills()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=device_env(),
                            preexec_fn=limit.preexec())
    sampler = Sampler(proc.pid).start()
    try:
        out, _ = proc.communicate(timeout=seconds + 300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    sampler.stop()
    m = re.search(r"(\d+) frames in ([\d.]+) s: ([\d.]+) FPS end to end \(inference ([\d.]+) ms", out)
    res = {"rc": proc.returncode, "rss": sampler.stats(), "group_peak_mb": limit.peak_mb(),
           "oom_kills": _delta(limit.oom_kills(), oom0), "traceback": "Traceback" in out,
           "frames": int(m.group(1)) if m else 0, "fps": float(m.group(3)) if m else None,
           "inference_ms": float(m.group(4)) if m else None, "stopped": "stopped: duration" in out,
           "tail": out.strip().splitlines()[-3:]}
    res["ok"] = (res["rc"] == 0 and res["stopped"] and res["frames"] >= 3 and not res["traceback"]
                 and not res["oom_kills"] and _bounded(res["rss"], limit))
    return res


def _delta(now, before):
    return None if now is None or before is None else now - before


def _bounded(rss: dict, limit: Limit) -> bool:
    return bool(rss.get("samples")) and rss["peak_mb"] < limit.mem_mb and rss["growth_mb"] <= GROWTH_MB


def _get(port: int, path: str, timeout: float = 30.0):
    return harness.http_get("127.0.0.1", port, path, timeout)


def serve_daemon(limit: Limit, model: str, seconds: float) -> dict:
    cmd = limit.wrap([sys.executable, "-m", "edge_saliency", "serve", "--model", model, "--source", "synthetic",
                      "--listen", "127.0.0.1:0", "--stream-fps", "5"])
    limit.reset_peak()
    oom0 = limit.oom_kills()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=device_env(),
                            preexec_fn=limit.preexec())
    log: list[str] = []
    port_box: list[int] = []

    def pump():
        for line in proc.stdout:
            log.append(line.rstrip())
            m = re.search(r"serving on http://[\d.]+:(\d+)", line)
            if m and not port_box:
                port_box.append(int(m.group(1)))

    threading.Thread(target=pump, daemon=True).start()
    res = {"healthz_fail": 0, "healthz_ok": 0, "latest_ok": 0, "mjpeg_bytes": 0}
    deadline = time.monotonic() + 300
    while not port_box and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    sampler = Sampler(proc.pid).start()
    stop = threading.Event()

    def viewer(port):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/stream.mjpg")
            r = conn.getresponse()
            while not stop.is_set():
                chunk = r.read1(65536)
                if not chunk:
                    break
                res["mjpeg_bytes"] += len(chunk)
            conn.close()
        except OSError:
            pass

    if port_box:
        port = port_box[0]
        while time.monotonic() < deadline:  # model loaded and a frame processed
            try:
                if _get(port, "/healthz", 5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        v = threading.Thread(target=viewer, args=(port,), daemon=True)
        v.start()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end and proc.poll() is None:
            try:
                res["healthz_ok" if _get(port, "/healthz", 10)[0] == 200 else "healthz_fail"] += 1
                status, body = _get(port, "/api/latest", 10)
                res["latest_ok"] += status == 200 and b'"label"' in body
            except OSError:
                res["healthz_fail"] += 1
            time.sleep(0.5)
        stop.set()
    alive = proc.poll() is None
    t_term = time.monotonic()
    if alive:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    sampler.stop()
    fps = None
    metrics = [ln for ln in log if "FPS" in ln]
    res.update({"port": port_box[0] if port_box else None, "alive_at_end": alive, "rc": proc.returncode,
                "stop_s": round(time.monotonic() - t_term, 2), "rss": sampler.stats(),
                "group_peak_mb": limit.peak_mb(), "oom_kills": _delta(limit.oom_kills(), oom0),
                "traceback": any(ln.startswith("Traceback") for ln in log), "fps_lines": metrics[-1:],
                "tail": log[-3:], "fps": fps})
    res["ok"] = (alive and res["rc"] == 0 and res["healthz_fail"] == 0 and res["healthz_ok"] > 0
                 and res["latest_ok"] > 0 and res["mjpeg_bytes"] > 1000 and not res["traceback"]
                 and not res["oom_kills"] and _bounded(res["rss"], limit))
    return res


def limit_enforced(limit: Limit) -> dict:
    """Allocate (and touch) 128 MB more than the limit inside it: the process must die or fail."""
    grab = (f"b = bytearray({(limit.mem_mb + 128) * MB}); "
            "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; print('ALLOCATED')")
    p = subprocess.run(limit.wrap([sys.executable, "-c", grab]), capture_output=True, text=True,
                       preexec_fn=limit.preexec(), timeout=300)
    enforced = p.returncode != 0 and "ALLOCATED" not in p.stdout
    how = ("killed by signal %d" % -p.returncode if p.returncode < 0 else
           "MemoryError" if "MemoryError" in p.stderr else f"exit {p.returncode}")
    return {"enforced": enforced, "how": how if enforced else "the allocation succeeded: no limit"}


def check(model: str, seconds: float, mem_mb: int = 512, core: int = 0) -> dict:
    tried: list[str] = []
    limit = make_limit(mem_mb, core, tried)
    try:
        report = {"limit": {"method": limit.method, "mem_mb": mem_mb, "core": core,
                            "cgroup": str(limit.cgroup) if limit.cgroup else None,
                            "not_usable": tried, "notes": limit.notes, "probe": limit_enforced(limit)},
                  "imports": measure_imports(limit, model),
                  "run": run_loop(limit, model, seconds),
                  "serve": serve_daemon(limit, model, seconds)}
    finally:
        limit.close()
    report["ok"] = report["limit"]["probe"]["enforced"] and all(report[k]["ok"] for k in ("imports", "run", "serve"))
    return report


def markdown(report: dict, command: str) -> str:
    lim, imp, run, srv = report["limit"], report["imports"], report["run"], report["serve"]
    lines = [
        "# The device side under Pi Zero 2 W limits (1 core, 512 MB, headless)", "",
        f"Command: `{command}`  ", f"Date: {report['date']}; host: {report['host']} (a shared, noisy machine: "
        "the FPS figures are this host's single core, not a Pi's)", "",
        f"Memory limit: **{lim['method']}** ({lim['mem_mb']} MB{', group ' + lim['cgroup'] if lim['cgroup'] else ''}); "
        f"CPU: `taskset -c {lim['core']}`. Not usable here: {'; '.join(lim['not_usable']) or 'n/a'}. "
        f"The limit is real: {lim['mem_mb'] + 128} MB allocated inside it -> "
        f"{lim['probe']['how']}.", "",
        "| | RSS (MB) |", "|---|---|",
        f"| after importing the device side (cv2, onnxruntime, numpy, run + serve modules) | {imp.get('import_mb')} |",
        f"| + model loaded and one frame inferred | {imp.get('model_loaded_mb')} |",
        f"| `run --headless`: peak / steady (median, last third) / growth | {run['rss'].get('peak_mb')} / "
        f"{run['rss'].get('steady_mb')} / {run['rss'].get('growth_mb'):+} |",
        f"| `serve` + 1 MJPEG viewer + 2 req/s: peak / steady / growth | {srv['rss'].get('peak_mb')} / "
        f"{srv['rss'].get('steady_mb')} / {srv['rss'].get('growth_mb'):+} |", "",
        f"- torch imported: {imp.get('torch_imported')}; process threads after the model loaded: "
        f"{imp.get('process_threads')}",
        f"- run: exit {run['rc']}, {run['frames']} frames, {run['fps']} FPS, inference {run['inference_ms']} ms, "
        f"affinity {run['rss'].get('affinity')}, group peak {run['group_peak_mb'] and round(run['group_peak_mb'])} MB "
        f"(incl. page cache), OOM kills {run['oom_kills']}: **{'PASS' if run['ok'] else 'FAIL'}**",
        f"- serve: /healthz 200 x{srv['healthz_ok']} (failures {srv['healthz_fail']}), /api/latest x{srv['latest_ok']}, "
        f"MJPEG {srv['mjpeg_bytes'] // 1024} KiB, SIGTERM -> exit {srv['rc']} in {srv['stop_s']} s, affinity "
        f"{srv['rss'].get('affinity')}, group peak {srv['group_peak_mb'] and round(srv['group_peak_mb'])} MB, "
        f"OOM kills {srv['oom_kills']}: **{'PASS' if srv['ok'] else 'FAIL'}**",
        "", f"Verdict: **{'PASS' if report['ok'] else 'FAIL'}** (bounded: peak RSS under the limit and at most "
        f"+{GROWTH_MB:g} MB between the middle and the last third of the run)", "",
        "RSS counts shared library pages (onnxruntime, OpenCV) that other processes also map; a cgroup v1 group "
        "is charged only for pages first touched inside it, so its peak can be below the RSS.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="edge-saliency ONNX file")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the run and serve phases (default: %(default)s)")
    ap.add_argument("--mem-mb", type=int, default=512)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "pi_limits"), help="results path without suffix")
    args = ap.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"pi_limits: model file not found: {args.model}", file=sys.stderr)
        return 2
    try:
        report = check(args.model, args.seconds, args.mem_mb, args.core)
    except RuntimeError as exc:
        print(f"pi_limits: {exc}", file=sys.stderr)
        return 2
    report.update(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  host=f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    command = "python benchmarks/pi_limits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out + ".json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report, command)
    Path(args.out + ".md").write_text(md)
    print(md)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
