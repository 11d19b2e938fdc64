#!/usr/bin/env python3
"""Smoke test of `edge-saliency serve` on a device: start it, check /healthz, /api/latest and one
MJPEG frame, send SIGTERM, expect exit 0. Standard library only (runs on a fresh device install).

    python3 deploy/smoke_serve.py --model m.onnx --source video.mp4 [--exe edge-saliency] [--timeout 300]

Used by deploy/check_arm64.sh (inside the emulated arm64 root) and benchmarks/pi_limits.py (under a
1-core, 512 MB limit). Prints one line per step; exit 0 when every step passed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time


def http_get(host: str, port: int, path: str, timeout: float):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def first_mjpeg_frame(host: str, port: int, timeout: float) -> bytes:
    """The first JPEG of /stream.mjpg (multipart/x-mixed-replace)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/stream.mjpg")
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"/stream.mjpg answered {resp.status}")
        ctype = resp.getheader("Content-Type", "")
        if "multipart/x-mixed-replace" not in ctype:
            raise RuntimeError(f"/stream.mjpg Content-Type is {ctype!r}")
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(4096)
            if not chunk:
                break
            buf += chunk
            start = buf.find(b"\xff\xd8")
            end = buf.find(b"\xff\xd9", start + 2) if start >= 0 else -1
            if start >= 0 and end > start:
                return buf[start:end + 2]
        raise RuntimeError(f"no complete JPEG within {timeout:.0f} s ({len(buf)} bytes read)")
    finally:
        conn.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--exe", default="edge-saliency", help="the edge-saliency command (may be 'python -m edge_saliency')")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for start-up (default: %(default)s)")
    ap.add_argument("--extra", default="", help="more serve flags, e.g. '--threads 1'")
    args = ap.parse_args(argv)

    cmd = shlex.split(args.exe) + ["serve", "--model", args.model, "--source", args.source,
                                   "--listen", "127.0.0.1:0", "--stream-fps", "5"] + shlex.split(args.extra)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "NOTIFY_SOCKET")}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    log: list[str] = []

    def pump():
        for line in proc.stdout:
            log.append(line.rstrip())
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    failures = []

    def step(name, ok, detail=""):
        print(f"serve smoke: {'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        if not ok:
            failures.append(name)
        return ok

    url = None
    try:
        deadline = t0 + args.timeout
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            if line is None:
                break
            m = re.search(r"serving on (http://[\d.]+:(\d+))", line)
            if m:
                url, port = m.group(1), int(m.group(2))
        if not step("start", url is not None, f"{url} after {time.monotonic() - t0:.1f} s" if url else
                    f"no 'serving on' line; rc={proc.poll()}; last output: {' | '.join(log[-5:])}"):
            return 1
        host = "127.0.0.1"
        status, body = None, b""
        while time.monotonic() < deadline:
            try:
                status, body = http_get(host, port, "/healthz", 10)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        step("/healthz", status == 200, f"{status} {body[:120].decode(errors='replace')} after "
                                        f"{time.monotonic() - t0:.1f} s")
        status, body = http_get(host, port, "/api/latest", 30)
        latest = {}
        try:
            latest = json.loads(body)
        except ValueError:
            pass
        step("/api/latest", status == 200 and "label" in latest,
             f"{status} label={latest.get('label')!r} score={latest.get('score')} box={latest.get('box')}")
        try:
            jpeg = first_mjpeg_frame(host, port, 60)
            step("/stream.mjpg", len(jpeg) > 1000, f"first JPEG {len(jpeg)} bytes")
        except (OSError, RuntimeError) as exc:
            step("/stream.mjpg", False, str(exc))
    finally:
        if proc.poll() is None:
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
                time.sleep(0.2)  # the last lines through the pump
                waited = [ln.split(" ", 2)[-1] for ln in log if "inference in progress" in ln or
                          "inference still running" in ln]
                step("SIGTERM", rc == 0, f"exit {rc} in {time.monotonic() - t_term:.1f} s"
                     + (f" ({'; '.join(waited)})" if waited else ""))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                step("SIGTERM", False, "still running 30 s after SIGTERM (killed)")
        tracebacks = [ln for ln in log if ln.startswith("Traceback")]
        step("no traceback in the output", not tracebacks, f"{len(log)} lines of output")
    if failures:
        print("serve smoke: output was:\n  " + "\n  ".join(log[-30:]), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
