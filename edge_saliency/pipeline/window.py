"""`run`'s window: the OpenCV window itself and the sink that drives it (keys, key help, NO SIGNAL).

Keys: 1-6 views, v/Tab next view, h HUD, +/- alpha, s snapshot (PNG in the working folder),
? key help (shown for HELP_SECONDS when the window opens), q/Esc quit. The help and the hint are
drawn on the window's copy of a frame only: recordings and the daemon's streams never get them.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.pipeline.frame_loop import Sink, Tick
from edge_saliency.pipeline.render import VIEW_HELP, VIEWS, draw_banner

KEY_VIEWS = {ord(str(i + 1)): v for i, v in enumerate(VIEWS)}
HELP_SECONDS = 6.0


class WindowUnavailable(UserError):
    """A window was asked for and this OpenCV cannot open one."""


class Window:
    """The OpenCV window; `show` returns the key pressed (-1 for none).

    Resizable, without the Qt toolbar, and sized to the image (up to MAX_SIZE) whenever the image
    size changes, e.g. to the side-by-side view (a WINDOW_NORMAL window otherwise opens at Qt's
    default 400x300 and shows a 640x480 frame shrunk)."""

    MAX_SIZE = (1600, 900)

    def __init__(self, title: str = "edge-saliency"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:  # e.g. the headless build: "The function is not implemented"
            msg = " ".join(str(exc).split())
            raise WindowUnavailable(f"no window: OpenCV cannot open one ({msg[-160:]})") from None
        self.shown = False
        self._size: tuple[int, int] | None = None

    def show(self, img: np.ndarray, wait_ms: int = 1) -> int:
        size = (img.shape[1], img.shape[0])
        if size != self._size:
            k = min(1.0, self.MAX_SIZE[0] / size[0], self.MAX_SIZE[1] / size[1])
            try:
                cv2.resizeWindow(self.title, int(size[0] * k), int(size[1] * k))
            except cv2.error:
                pass
            self._size = size
        cv2.imshow(self.title, img)
        self.shown = True
        return cv2.waitKey(wait_ms)

    @property
    def closed(self) -> bool:
        if not self.shown:
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


class LiveWindow(Sink):
    """The window as a sink of the frame loop: shows each overlay, applies the keys, keeps the
    last frame up (with a NO SIGNAL banner while the camera is gone) when no frame comes."""

    def __init__(self, window: Window | None, renderer, say=print):
        self.window, self.renderer, self.say = window, renderer, say
        self.help_until = time.perf_counter() + HELP_SECONDS if window is not None else 0.0
        self.help_pinned = False  # '?' turned it on for good
        self.last: np.ndarray | None = None
        self.last_id = 0
        self.snapshots: list[Path] = []

    # ------------------------------------------------------------------ the sink
    def on_frame(self, tick: Tick) -> str | None:
        self.last, self.last_id = tick.image, tick.frame.id
        key = self.window.show(self._with_help(tick.image))
        return None if self.handle_key(key, tick.image, tick.frame.id) else "quit"

    def on_idle(self, loop) -> str | None:
        shown = self.last
        cap = loop.capture
        if cap.no_signal:
            shown = self.last.copy() if self.last is not None else np.zeros((480, 640, 3), np.uint8)
            draw_banner(shown, f"NO SIGNAL - reconnecting ({cap.signal_lost_for:.0f} s)")
        if shown is not None and not self.handle_key(self.window.show(self._with_help(shown)), self.last, self.last_id):
            return "quit"
        return None

    def ended(self) -> str | None:
        return "window closed" if self.window.closed else None

    def hold(self, stop) -> None:
        """A finished file: keep the last frame up until the user quits (or `stop` is set)."""
        if self.last is None:
            return
        held = self.last.copy()
        draw_banner(held, "end of source - press q to quit")
        while not stop.is_set() and not self.window.closed:
            if (self.window.show(held, 30) & 0xFF) in (ord("q"), 27):
                break

    # ------------------------------------------------------------------ keys
    def handle_key(self, key: int, out: np.ndarray | None, frame_id: int) -> bool:
        """Apply a window key; False means quit."""
        if key < 0:
            return True
        key &= 0xFF
        r = self.renderer
        if key in (ord("q"), 27):
            return False
        if key in KEY_VIEWS:
            if not r.set_view(KEY_VIEWS[key]):
                self.say(f"this model cannot show the {KEY_VIEWS[key]} view; it can show {', '.join(r.views)}")
            else:
                self.say(f"view: {r.view} ({VIEW_HELP[r.view]})")
        elif key in (ord("v"), 9):
            r.next_view()
            self.say(f"view: {r.view} ({VIEW_HELP[r.view]})")
        elif key == ord("h"):
            r.hud = not r.hud
            self.say(f"HUD {'on' if r.hud else 'off'}")
        elif key in (ord("+"), ord("=")):
            self.say(f"alpha {r.nudge_alpha(+0.1):.2f}")
        elif key in (ord("-"), ord("_")):
            self.say(f"alpha {r.nudge_alpha(-0.1):.2f}")
        elif key == ord("?"):
            self.help_pinned = not (self.help_pinned or time.perf_counter() < self.help_until)
            self.help_until = 0.0
            self.say(f"key help {'on' if self.help_pinned else 'off'}")
        elif key == ord("s") and out is not None:
            path = Path(f"snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{frame_id}.png")
            cv2.imwrite(str(path), out)
            self.snapshots.append(path)
            self.say(f"saved {path}")
        return True

    def _with_help(self, out: np.ndarray) -> np.ndarray:
        """The window's copy of a frame: plus the key help while it is due, else a small '? keys'
        hint at the bottom left (with the HUD on)."""
        full = self.help_pinned or time.perf_counter() < self.help_until
        if not (full or self.renderer.hud):
            return out
        shown = out.copy()
        self.renderer.draw_help(shown, full=full)
        return shown
