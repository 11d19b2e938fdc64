"""systemd's sd_notify protocol in a few lines (no dependency): datagrams to $NOTIFY_SOCKET.

    n = Notifier.from_env()        # inert when not started by systemd (no NOTIFY_SOCKET)
    n.ready(); n.watchdog(); n.status("42 FPS"); n.stopping()
    n.watchdog_interval            # seconds between pings (half of WatchdogSec=), None without a watchdog

A socket path starting with '@' is in the abstract namespace (leading NUL byte). The watchdog
applies to this process only if $WATCHDOG_PID is unset or names it.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edge_saliency")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env=None) -> "Notifier":
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec = None
        try:
            if env.get("WATCHDOG_USEC") and (not env.get("WATCHDOG_PID") or int(env["WATCHDOG_PID"]) == os.getpid()):
                usec = int(env["WATCHDOG_USEC"])
                usec = usec if usec > 0 else None
        except ValueError:
            usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Ping this often: half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8"), addr)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
