"""The `run` window on a real X server: Xvfb, keys pressed with xdotool (XTEST, as a keyboard
would), the window captured with xwd. Starts `edge-saliency run` on a generated demo video, presses
each view key 1-6, v, h, +, -, ?, s and q, and checks what each did: the printed key effect, the
view recorded in the JSON log, and the pixels of the window (every view looks different, h takes
the HUD away, +/- change the blend, the key help is drawn in the window but never in the
recording). Screenshots are kept next to the test's files (and copied to $EDGE_SALIENCY_SHOTS when set).

Needs Debian's xvfb, xdotool and x11-apps (installed here when missing and possible: root and
apt-get, or `make x11`), and OpenCV's GUI build: the project installs the headless one, so `run` gets
opencv-python of the same version first on its path (tests/opencv_builds.py)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_saliency.pipeline.sources import DemoSource
from opencv_builds import gui_backend_in, opencv_first

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"Xvfb": "xvfb", "xdotool": "xdotool", "xwd": "x11-apps"}
VIEW_KEYS = ["1", "2", "3", "4", "5", "6"]
VIEWS = ["heatmap", "recipro", "fastcam", "lovi", "side", "raw"]


def cv2_gui() -> str | None:
    """The GUI backend this OpenCV was built with (None for opencv-python-headless)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            value = line.split(":", 1)[1].strip()
            return None if value.upper() in ("NONE", "NO", "") else value
    return None


def ensure_x_tools() -> str | None:
    """None when Xvfb, xdotool and xwd are there (installing them if we may), else why not."""
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"needs {', '.join(sorted(set(missing)))} (apt-get install xvfb xdotool x11-apps, or make x11)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=120", *sorted(set(missing))],
                       env=env, capture_output=True, timeout=600, check=True)
    except (subprocess.SubprocessError, OSError):
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300, check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=120", *sorted(set(missing))],
                           env=env, capture_output=True, timeout=600, check=True)
        except (subprocess.SubprocessError, OSError) as exc:
            return f"could not install {', '.join(missing)}: {exc}"
    still = [t for t in TOOLS if shutil.which(t) is None]
    return f"still missing after apt-get: {', '.join(still)}" if still else None


@pytest.fixture(scope="module")
def gui_cv2(tmp_path_factory):
    """Where `run` finds OpenCV's GUI build: None when this cv2 has one, else a folder put first on its
    PYTHONPATH with opencv-python of the same version (the project installs the headless build)."""
    if cv2_gui() is not None:
        return None
    folder = opencv_first("gui", tmp_path_factory.mktemp("pip") / "cv2")
    if gui_backend_in(folder) is None:
        pytest.skip(f"opencv-python in {folder} has no GUI backend either")
    return folder


@pytest.fixture(scope="module")
def display():
    why = ensure_x_tools()
    if why:
        pytest.skip(why)
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number.isdigit():
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def read_xwd(data: bytes) -> np.ndarray:
    """An xwd dump (ZPixmap, 32 bits per pixel, as Xvfb at depth 24 gives) -> BGR uint8."""
    f = struct.unpack(">25I", data[:100])
    header_size, version, fmt, w, h, byte_order, bpp, bpl, ncolors = f[0], f[1], f[2], f[4], f[5], f[7], f[11], f[12], f[19]
    if version != 7 or fmt != 2 or bpp != 32:
        raise ValueError(f"unexpected xwd format: version {version}, format {fmt}, {bpp} bits per pixel")
    px = np.frombuffer(data, np.uint8, count=bpl * h, offset=header_size + 12 * ncolors)
    px = px.reshape(h, bpl)[:, :w * 4].reshape(h, w, 4)
    return np.ascontiguousarray(px[..., :3] if byte_order == 0 else px[..., 3:0:-1])


class Session:
    """A running `edge-saliency run` with a window, its stdout read line by line."""

    def __init__(self, proc, env, tmp_path):
        self.proc, self.env, self.tmp = proc, env, tmp_path
        self.lines: list[str] = []
        self.wid: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def x(self, *args, timeout=20) -> str:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout).stdout

    def wait_line(self, text: str, after: int, timeout=30.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} after line {after}; output:\n" + "\n".join(self.lines))

    def key(self, name: str, expect: str, timeout=30.0) -> str:
        mark = len(self.lines)
        self.x("xdotool", "windowfocus", "--sync", self.wid)
        self.x("xdotool", "key", name)
        return self.wait_line(expect, mark, timeout)

    def log_rows(self):
        path = self.tmp / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.exists() else []

    def wait_view(self, view: str, frames: int = 3, timeout=30.0):
        """Until the log holds `frames` frames rendered in `view` (the window shows it by then)."""
        end = time.time() + timeout
        while time.time() < end:
            rows = self.log_rows()
            if len(rows) >= frames and all(r.get("view") == view for r in rows[-frames:]):
                return rows[-1]
            time.sleep(0.05)
        raise AssertionError(f"the log never showed view {view}: {[r.get('view') for r in self.log_rows()[-5:]]}")

    def wait_frames(self, n: int, timeout=30.0):
        """Until `n` more frames are logged (rendered and shown) than now."""
        start, end = len(self.log_rows()), time.time() + timeout
        while len(self.log_rows()) < start + n:
            assert time.time() < end, f"fewer than {n} new frames in {timeout} s"
            time.sleep(0.05)

    def shot(self, name: str, timeout: float = 10.0) -> np.ndarray:
        """The window's pixels. A capture taken while Qt has not painted the window yet (after a
        resize, under load) is black: taken again, up to `timeout` seconds."""
        end = time.time() + timeout
        while True:
            data = subprocess.run(["xwd", "-id", self.wid, "-silent"], env=self.env, capture_output=True, timeout=20).stdout
            img = read_xwd(data)
            if img.max() > 0 or time.time() > end:
                break
            time.sleep(0.2)
        cv2.imwrite(str(self.tmp / f"window-{name}.png"), img)
        if os.environ.get("EDGE_SALIENCY_SHOTS"):
            Path(os.environ["EDGE_SALIENCY_SHOTS"]).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(Path(os.environ["EDGE_SALIENCY_SHOTS"]) / f"window-{name}.png"), img)
        return img


def differ(a: np.ndarray, b: np.ndarray) -> float:
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float(np.abs(a[:h, :w].astype(int) - b[:h, :w]).mean())


def still_video(path, seconds=45, fps=15):
    """The demo's cat-and-coffee scene, held still (MJPG: every frame decodes to the same pixels), so
    screenshots differ only by what the keys change and the HUD's figures."""
    src = DemoSource("demo")
    src.open()
    frame = src.make(int(src.SCENES.index("chelsea+coffee") * src.SECONDS_PER_SCENE * src.fps) + 5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frame.shape[1], frame.shape[0]))
    for _ in range(seconds * fps):
        writer.write(frame)
    writer.release()


def test_window_keys_on_a_real_x_server(display, gui_cv2, lite0_onnx, tmp_path):
    still_video(tmp_path / "in.avi")
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "CI", "EDGE_SALIENCY_HEADLESS")}
    env.update({"DISPLAY": display, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "xcb",
                "PYTHONPATH": os.pathsep.join([str(gui_cv2)] * bool(gui_cv2) + [str(ROOT)])})
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "run", "--model", str(lite0_onnx), "--source", "in.avi",
                             "--view", "fastcam", "--log-json", "log.jsonl", "--record", "rec.mp4", "--threads", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s = Session(proc, env, tmp_path)
    middle = (slice(160, 400), slice(100, 500))  # away from the HUD (top left), help (bottom left), legend
    try:
        end = time.time() + 90
        while time.time() < end and not s.wid:
            found = s.x("xdotool", "search", "--onlyvisible", "--name", "^edge-saliency").split()
            s.wid = found[-1] if found else None
            if proc.poll() is not None:
                raise AssertionError(f"run exited {proc.returncode}: {proc.stderr.read()}")
            time.sleep(0.2)
        assert s.wid, "the window never appeared"
        s.wait_view("fastcam", frames=3, timeout=60)
        assert not any("headless" in line for line in s.lines)

        shots = {}
        for key, view in zip(VIEW_KEYS, VIEWS):
            line = s.key(key, f"view: {view}")
            assert line.startswith(f"view: {view} (")
            s.wait_view(view)
            shots[view] = s.shot(view)
            # the window fits the image: 640x480, or 1280x480 side by side
            assert shots[view].shape[:2] == ((480, 1280) if view == "side" else (480, 640)), (view, shots[view].shape)
        for i, a in enumerate(VIEWS):  # every view looks different on screen
            for b in VIEWS[i + 1:]:
                if "side" not in (a, b):
                    assert differ(shots[a][middle], shots[b][middle]) > 2.0, (a, b)
        side = shots["side"]  # frame | map: the left half is the raw frame, the right half the map
        assert differ(side[:, :640][middle], shots["raw"][middle]) < 1.0
        assert differ(side[:, 640:][middle], shots["raw"][middle]) > 10.0
        s.key("v", "view: heatmap")  # v: the next view after raw
        s.wait_view("heatmap")
        after_v = s.shot("after-v")
        assert differ(after_v[middle], shots["heatmap"][middle]) < 1.0 < differ(after_v[middle], shots["raw"][middle])

        s.key("3", "view: fastcam")
        s.wait_view("fastcam")
        at = {0.5: s.shot("alpha-0.50")}
        for key, alpha in (("plus", 0.6), ("minus", 0.5), ("minus", 0.4)):
            s.key(key, f"alpha {alpha:.2f}")
            s.wait_frames(3)
            at[alpha] = s.shot(f"alpha-{alpha:.2f}")
        d_small = differ(at[0.5][middle], at[0.6][middle])
        d_big = differ(at[0.4][middle], at[0.6][middle])
        assert d_big > 1.5 * d_small > 0.5, (d_small, d_big)  # the blend follows alpha, both ways

        with_hud = s.shot("hud-on")
        s.key("h", "HUD off")
        s.wait_frames(3)
        no_hud = s.shot("hud-off")
        corner = (slice(0, 110), slice(0, 280))  # where the labels and FPS are
        assert differ(with_hud[corner], no_hud[corner]) > 3.0
        assert differ(with_hud[middle], no_hud[middle]) < 1.0
        s.key("h", "HUD on")

        # ? pins the key help (bottom left) on, and off again
        if "off" in s.key("question", "key help "):  # still within the first seconds: that press hid it
            s.key("question", "key help on")
        s.wait_frames(3)
        help_on = s.shot("help-on")
        s.key("question", "key help off")
        s.wait_frames(3)
        help_off = s.shot("help-off")
        bottom_left = (slice(-70, None), slice(0, 360))
        assert differ(help_on[bottom_left], help_off[bottom_left]) > 2.0
        assert differ(help_on[middle], help_off[middle]) < 1.0

        line = s.key("s", "saved snapshot-")
        snap = tmp_path / line.split("saved ", 1)[1].strip()
        img = cv2.imread(str(snap))
        assert img is not None and img.shape == (480, 640, 3)
        s.key("plus", "alpha 0.50")  # back to how it started, for the check of the recording below
        s.wait_frames(5)

        mark = len(s.lines)
        s.x("xdotool", "windowfocus", "--sync", s.wid)
        s.x("xdotool", "key", "q")
        rc = proc.wait(30)
        err = proc.stderr.read()
        assert rc == 0, err
        assert "Traceback" not in err
        s.wait_line("stopped: quit", mark, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # the recording never had the key help: a frame from the first seconds (help up in the window)
    # and the last frame (help off; same view, alpha and HUD) have the same bottom-left corner
    cap = cv2.VideoCapture(str(tmp_path / "rec.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    rows = s.log_rows()
    early = next(i for i, r in enumerate(rows) if r["view"] == "fastcam")
    last = max(i for i, r in enumerate(rows) if r["view"] == "fastcam")
    assert len(frames) == len(rows) and last > early
    noise = differ(frames[early][middle], frames[last][middle])  # what mp4 coding alone changes
    corner = differ(frames[early][-70:, :360], frames[last][-70:, :360])
    assert corner < noise + 2.0, (corner, noise)  # burnt-in help would add ~15 there
