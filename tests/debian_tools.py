"""Real outside programs for the tests (mosquitto, promtool): found on PATH, else installed from
Debian when we are root with apt-get (as the Makefile's `tools` target does), else a skip that
says why."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

_tried: set[str] = set()


def tool(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` if needed and possible; otherwise skip."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if found:
        return found
    if package not in _tried and os.geteuid() == 0 and shutil.which("apt-get"):
        _tried.add(package)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env,
                           capture_output=True, timeout=600, check=False)
            found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
            if not found:
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
                subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env,
                               capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
        if found:
            return found
    pytest.skip(f"{binary} not installed and it could not be installed here (Debian package {package!r}; "
                f"run `make tools` as root, or apt-get install {package})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A mosquitto broker of the test's own on 127.0.0.1:<free port>, with its own config file."""

    def __init__(self, folder, port: int | None = None, extra: str = "", anonymous: bool = True):
        self.bin = tool("mosquitto", "mosquitto")
        self.folder = folder
        self.port = port or free_port()
        self.conf = folder / f"mosquitto-{self.port}.conf"
        self.log = folder / f"mosquitto-{self.port}.log"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous {'true' if anonymous else 'false'}\n"
                             f"persistence false\nlog_dest file {self.log}\nlog_type all\n"
                             + ("user root\n" if os.geteuid() == 0 else "") + extra)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.proc = subprocess.Popen([self.bin, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]} "
                                   f"{self.log.read_text()[-500:] if self.log.exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
