"""Latest-frame capture: a thread reads the source and keeps only the newest frame.

A live camera must never build up lag behind reality (V4L2 queues ~4 frames by default): the
loop always gets the newest frame, each frame once (frame ids increase), with its capture time
so capture-to-display latency is measurable.

    cap = Capture(source, realtime=True)
    cap.start()
    frame = cap.get(after_id=last.id, timeout=0.1)   # newest frame newer than last, or None
    cap.no_signal, cap.finished(last.id), cap.stats
    cap.stop()

Modes (from the source's attributes, see `edge_saliency.sources.Source`):
- camera / stream: latest frame; older unread frames are dropped.
- files, images and generated sources with realtime=True: paced to the source's FPS, then as a
  camera (a slow loop drops frames, as a video player does).
- the same with realtime=False (--fast): hand-off, every frame, as fast as the loop takes them.

Faults: a failed read (None), a read that blocks, or a device that vanishes are detected by the
age of the newest frame, logged once, and retried with backoff (release, reopen; a read that
stays blocked is abandoned and the device reopened from a clone). `no_signal` is True meanwhile,
so the loop can keep showing the last frame with a banner; frames resume when the source does.
Garbage frames (not an array, grayscale, 16-bit, wrong shape, tiny) are skipped with one log line
per kind. The end of a file ends the capture cleanly (`finished`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from edge_saliency.sources import EndOfStream, Source, SourceError

log = logging.getLogger("edge_saliency")


@dataclass
class Frame:
    id: int  # 1, 2, 3... in capture order (skipped garbage gets no id)
    image: np.ndarray  # BGR uint8 [H, W, 3]
    t_capture: float  # time.perf_counter() when the read returned
    wall_capture: float  # time.time() at the same moment (for logs)


def frame_problem(img) -> str | None:
    """Why a frame is unusable (None if it is a BGR uint8 [H, W, 3] image)."""
    if not isinstance(img, np.ndarray):
        return f"not an image ({type(img).__name__})"
    if img.dtype != np.uint8:
        bits = img.dtype.itemsize * 8
        return f"{bits}-bit {img.dtype} pixels {img.shape} (want 8-bit)"
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return f"grayscale {img.shape} (want 3 channels)"
    if img.ndim != 3 or img.shape[2] != 3:
        return f"wrong shape {img.shape} (want [H, W, 3])"
    if img.shape[0] < 8 or img.shape[1] < 8:
        return f"tiny frame {img.shape}"
    return None


class Capture:
    def __init__(self, source: Source, realtime: bool = True, stale_after: float | None = None,
                 backoff: tuple[float, float] = (0.25, 4.0), fail_limit: int = 3):
        self.source = source
        self.realtime = realtime
        fps = source.fps or 30.0
        self.stale_after = stale_after if stale_after is not None else max(1.0, 3.0 / fps)
        self.backoff = backoff
        self.fail_limit = fail_limit
        self.handoff = source.paced and not realtime
        self.pace = source.paced and realtime
        self.stats = {"captured": 0, "dropped": 0, "skipped": 0, "failed_reads": 0, "faults": 0, "reconnects": 0}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._latest: Frame | None = None
        self._consumed = True
        self._ended = False
        self._gen = 0
        self._alive_t = time.perf_counter()
        self._busy: tuple[int, float] | None = None  # (reader generation, inside open()/read() since)
        self._waiting = False  # waiting for the consumer (hand-off mode)
        self._fault_since: float | None = None
        self._abandon_after = self.stale_after
        self._logged_kinds: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._monitor: threading.Thread | None = None

    # ------------------------------------------------------------------ public
    def start(self, needs_open: bool = False) -> "Capture":
        """needs_open: the source is not open yet (it could not be at start): open it, retrying with backoff."""
        self._alive_t = time.perf_counter()
        if needs_open:
            self._fault("not open yet")
        self._spawn(self.source, needs_open=needs_open)
        self._monitor = threading.Thread(target=self._watch, name="capture-monitor", daemon=True)
        self._monitor.start()
        return self

    def get(self, after_id: int = 0, timeout: float = 0.1) -> Frame | None:
        """The newest frame with id > after_id; None if none came within timeout."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while not (self._latest is not None and self._latest.id > after_id):
                if self._ended or self._stop.is_set():
                    return None
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._consumed = True
            self._cond.notify_all()
            return self._latest

    def finished(self, after_id: int = 0) -> bool:
        """The source ended and every frame up to the last one was taken."""
        with self._cond:
            return self._ended and (self._latest is None or self._latest.id <= after_id)

    @property
    def latest_id(self) -> int:
        return self.stats["captured"]

    @property
    def no_signal(self) -> bool:
        return self._fault_since is not None and not self._ended

    @property
    def signal_lost_for(self) -> float:
        return 0.0 if self._fault_since is None else time.perf_counter() - self._fault_since

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        if self._monitor is not None:
            self._monitor.join(timeout)
        # a reader still blocked in read() releases its own source when (if) the read returns

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ internals
    def _spawn(self, source: Source, needs_open: bool) -> None:
        with self._cond:
            self._gen += 1
            gen = self._gen
        self.source = source
        t = threading.Thread(target=self._read_loop, args=(gen, source, needs_open),
                             name=f"capture-{gen}", daemon=True)
        self._threads = [th for th in self._threads if th.is_alive()] + [t]
        t.start()

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._stop.is_set()

    def _fault(self, reason: str) -> None:
        if self._fault_since is None:
            self._fault_since = time.perf_counter()
            self.stats["faults"] += 1
            log.warning("%s: %s; retrying with backoff (showing the last frame)", self.source.describe(), reason)

    def _log_kind(self, kind: str, msg: str, *args) -> None:
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning(msg + " (further ones are counted, not logged)", *args)

    def _read_loop(self, gen: int, source: Source, needs_open: bool) -> None:
        backoff = self.backoff[0]
        fails = 0
        k = 0
        t0 = time.perf_counter()
        try:
            while self._current(gen):
                if needs_open:
                    self._set_busy(gen, True)
                    try:
                        source.open()
                        needs_open = False
                        self.stats["reconnects"] += 1
                        k, t0 = 0, time.perf_counter()
                    except SourceError as exc:
                        self._fault(f"cannot reopen ({exc})")
                    finally:
                        self._set_busy(gen, False)
                    if needs_open:
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, self.backoff[1])
                        continue
                if self.handoff:
                    with self._cond:
                        self._waiting = True
                        while not self._consumed and self._current(gen):
                            self._cond.wait(0.1)
                        self._waiting = False
                        self._alive_t = time.perf_counter()
                    if not self._current(gen):
                        break
                if self.pace:
                    due = t0 + k / (source.fps or 30.0)
                    delay = due - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                    elif delay < -1.0 / (source.fps or 30.0):  # fell behind: no catch-up burst
                        k, t0 = 0, time.perf_counter()
                    k += 1
                    if not self._current(gen):
                        break
                self._set_busy(gen, True)
                error = None
                try:
                    img = source.read()
                except EndOfStream:
                    with self._cond:
                        if gen == self._gen:
                            self._ended = True
                            self._fault_since = None
                        self._cond.notify_all()
                    break
                except Exception as exc:  # a driver error is a failed read, not a crash
                    img, error = None, f"{type(exc).__name__}: {exc}"
                finally:
                    self._set_busy(gen, False)
                t_read = time.perf_counter()
                if gen != self._gen:
                    break  # abandoned while blocked; a newer reader owns the device now
                if img is None:
                    fails += 1
                    self.stats["failed_reads"] += 1
                    if self._fault_since is None:
                        log.warning("%s: read failed%s; skipping", source.describe(), f" ({error})" if error else "")
                    if fails >= self.fail_limit:
                        self._fault(f"{fails} reads failed in a row")
                        source.release()
                        needs_open = True
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, self.backoff[1])
                    continue
                problem = frame_problem(img)
                if problem is not None:
                    self.stats["skipped"] += 1
                    self._log_kind(problem.split(" ")[0], "%s: skipping a frame: %s", source.describe(), problem)
                    continue
                fails, backoff = 0, self.backoff[0]
                self._publish(img, t_read)
        finally:
            source.release()

    def _set_busy(self, gen: int, busy: bool) -> None:
        if busy:
            self._busy = (gen, time.perf_counter())
        elif self._busy is not None and self._busy[0] == gen:
            self._busy = None

    def _publish(self, img: np.ndarray, t_read: float) -> None:
        with self._cond:
            if self._fault_since is not None:
                log.info("%s: frames are back after %.1f s", self.source.describe(), t_read - self._fault_since)
                self._fault_since = None
                self._abandon_after = self.stale_after
            if self._latest is not None and not self._consumed:
                self.stats["dropped"] += 1
            self.stats["captured"] += 1
            self._latest = Frame(self.stats["captured"], img, t_read, time.time() - (time.perf_counter() - t_read))
            self._consumed = False
            self._alive_t = t_read
            self._cond.notify_all()

    def _watch(self) -> None:
        """Frame-age watchdog: no frame for stale_after s -> no signal; a read or open blocked
        longer than that -> abandon that reader and reopen the device from a clone."""
        tick = min(0.05, self.stale_after / 4)
        while not self._stop.wait(tick):
            if self._ended:
                return
            now = time.perf_counter()
            if self._waiting:
                continue
            age = now - self._alive_t
            if age > self.stale_after:
                self._fault(f"no frame for {age:.1f} s (device blocked or gone)")
            busy = self._busy
            if busy is not None and busy[0] == self._gen and now - busy[1] > self._abandon_after:
                log.debug("abandoning a read blocked for %.1f s; reopening", now - busy[1])
                self._abandon_after = min(self._abandon_after * 2, 30.0)
                self._spawn(self.source.clone(), needs_open=True)
