"""Where frames come from. One `Source` interface, one small class per kind.

    open_source("0")                       webcam index 0 (or "/dev/video2")
    open_source("clip.mp4")                video file
    open_source("photo.jpg" | "photos/")   image file, or every image in a folder (sorted)
    open_source("rtsp://host:8554/cam")    RTSP / HTTP(S) / RTMP / UDP stream
    open_source("v4l2src ! ... ! appsink") GStreamer pipeline (OpenCV built with GStreamer)
    open_source("demo")                    moving real photographs (scikit-image), no camera needed
    open_source("synthetic")               test pattern with the frame number stamped in pixels
    open_source(None)                      webcam 0 if it opens, else demo

A source only reads: `read()` returns a frame (BGR uint8 as OpenCV gives it), None for a failed
read, or raises `EndOfStream`. Pacing, latest-frame handling and fault recovery live in
`edge_saliency.pipeline.capture`. `clone()` gives a fresh, unopened source of the same device, so a
capture can abandon a read that blocks forever and reconnect.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.errors import UserError

log = logging.getLogger("edge_saliency")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(UserError):
    """A source that cannot be opened: one line for the user."""


class EndOfStream(Exception):
    """A finite source (file, folder) has no more frames."""


class Source:
    """Interface. Attributes say how the capture should treat the source:

    live   -- frames happen in real time whether we read them or not (camera, stream, demo):
              the capture keeps only the newest one.
    finite -- it ends (video file, images).
    paced  -- read() returns at once, so the capture paces it to `fps` in --realtime mode
              (files, images, generated sources); a camera paces itself.
    """

    kind = "source"
    live = False
    finite = False
    paced = False
    fps: float | None = None

    def __init__(self, spec: str):
        self.spec = spec

    def open(self) -> None:
        """Open the device/file; raise SourceError if it cannot be opened."""

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def release(self) -> None:
        """Free the device/file. Safe to call twice."""

    def clone(self) -> "Source":
        """A fresh, unopened source of the same device (to reconnect after a fault)."""
        return type(self)(self.spec)

    @property
    def frame_count(self) -> int | None:
        return None

    def describe(self) -> str:
        return f"{self.kind} {self.spec}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r}>"


def _quiet_opencv():
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - very old OpenCV
        pass


class _CaptureSource(Source):
    """A source backed by cv2.VideoCapture."""

    api = cv2.CAP_ANY

    def __init__(self, spec: str):
        super().__init__(spec)
        self.cap: cv2.VideoCapture | None = None

    def _target(self):
        return self.spec

    def _open_failed(self) -> str:
        return f"cannot open {self.describe()}"

    def open(self) -> None:
        _quiet_opencv()
        cap = cv2.VideoCapture(self._target(), self.api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failed())
        self.cap = cap
        self._configure(cap)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and math.isfinite(fps) and 1.0 <= fps <= 1000.0:
            self.fps = float(fps)

    def _configure(self, cap) -> None:
        pass

    def read(self):
        if self.cap is None:
            return None
        ok, frame = self.cap.read()
        return frame if ok else None

    def release(self) -> None:
        cap, self.cap = self.cap, None
        if cap is not None:
            cap.release()


class WebcamSource(_CaptureSource):
    """A local camera by index (0) or device path (/dev/video2)."""

    kind = "webcam"
    live = True

    def __init__(self, spec: str | int, width: int | None = None, height: int | None = None):
        super().__init__(str(spec))
        self.width, self.height = width, height

    def clone(self):
        return WebcamSource(self.spec, self.width, self.height)

    def _target(self):
        return int(self.spec) if self.spec.isdigit() else self.spec

    def _open_failed(self) -> str:
        dev = f"/dev/video{self.spec}" if self.spec.isdigit() else self.spec
        if sys.platform.startswith("linux") and not os.path.exists(dev):
            return f"camera {self.spec} not found ({dev} does not exist); use --source demo or a video file"
        return f"camera {self.spec} did not open (busy, no permission, or not a capture device)"

    def _configure(self, cap) -> None:
        # V4L2 queues ~4 frames by default: ask for one, the capture thread drops the rest anyway
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)

    def describe(self) -> str:
        return f"camera {self.spec}"


class VideoFileSource(_CaptureSource):
    kind = "video"
    finite = True
    paced = True

    def _open_failed(self) -> str:
        return f"cannot decode {self.spec} as a video (not a video file, or a codec this OpenCV lacks)"

    def open(self) -> None:
        super().open()
        self.fps = self.fps or 30.0

    def read(self):
        if self.cap is None:
            raise EndOfStream
        ok, frame = self.cap.read()
        if not ok:
            raise EndOfStream
        return frame

    @property
    def frame_count(self):
        if self.cap is None:
            return None
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return n if n > 0 else None

    def describe(self) -> str:
        return f"video {self.spec}"


class StreamSource(_CaptureSource):
    """RTSP / HTTP(S) / RTMP / UDP network stream via FFmpeg."""

    kind = "stream"
    live = True
    api = cv2.CAP_FFMPEG

    def _configure(self, cap) -> None:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def _open_failed(self) -> str:
        return f"cannot open stream {_redact(self.spec)} (unreachable, wrong path, or not a video stream)"

    def describe(self) -> str:
        return f"stream {_redact(self.spec)}"


class GStreamerSource(_CaptureSource):
    """A GStreamer pipeline ending in appsink (e.g. a Jetson CSI camera via nvarguscamerasrc)."""

    kind = "gstreamer"
    live = True
    api = cv2.CAP_GSTREAMER

    def open(self) -> None:
        if not gstreamer_available():
            raise SourceError("this OpenCV build has no GStreamer support (cv2.getBuildInformation()); "
                              "install an OpenCV built with GStreamer (e.g. the Jetson system OpenCV) to use a pipeline")
        if "appsink" not in self.spec:
            raise SourceError("a GStreamer pipeline for --source must end in appsink "
                              "(e.g. '... ! videoconvert ! appsink drop=true max-buffers=1')")
        super().open()

    def _open_failed(self) -> str:
        return "GStreamer pipeline did not start (check it with gst-launch-1.0, ending in fakesink)"

    def describe(self) -> str:
        return "gstreamer pipeline"


class ImageSource(Source):
    """One image file, or every image in a folder (sorted by name), each shown once."""

    kind = "images"
    finite = True
    paced = True

    def __init__(self, spec: str, fps: float = 1.0):
        super().__init__(spec)
        self.fps = fps
        self.paths: list[Path] = []
        self._next = 0

    def clone(self):
        return ImageSource(self.spec, self.fps)

    def open(self) -> None:
        p = Path(self.spec)
        if p.is_dir():
            self.paths = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS and q.is_file())
            if not self.paths:
                raise SourceError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {self.spec}")
        else:
            self.paths = [p]
            if cv2.imread(str(p), cv2.IMREAD_COLOR) is None:
                raise SourceError(f"cannot read {self.spec} as an image")
        self._next = 0

    def read(self):
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                return img
            log.warning("skipping %s: not a readable image", path)
        raise EndOfStream

    @property
    def frame_count(self):
        return len(self.paths) or None

    def describe(self) -> str:
        return f"{len(self.paths)} image(s) from {self.spec}" if len(self.paths) != 1 else f"image {self.spec}"


class GeneratedSource(Source):
    """Frames made here, frame by frame (index -> image); live unless the capture runs --fast."""

    live = True
    paced = True

    def __init__(self, spec: str, fps: float = 30.0, size: tuple[int, int] = (640, 480)):
        super().__init__(spec)
        self.fps = fps
        self.size = size  # (w, h)
        self.index = 0

    def clone(self):
        clone = type(self)(self.spec, self.fps, self.size)
        clone.index = self.index
        return clone

    def read(self):
        img = self.make(self.index)
        self.index += 1
        return img

    def make(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def write_video(self, path, frames: int, start: int = 0) -> None:
        """Frames start..start+frames-1 as an mp4 file at this source's size and FPS (test and benchmark input)."""
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        try:
            for i in range(start, start + frames):
                writer.write(self.make(i))
        finally:
            writer.release()


class DemoSource(GeneratedSource):
    """Real photographs (scikit-image's cat, coffee, astronaut, rocket) filling the frame, each
    slowly panned and zoomed (a Ken Burns move), plus a scene where the cat and the coffee share
    the frame side by side: there the class-specific maps (Recipro-CAM, FastCAM) pick the top
    class's object while the class-agnostic SMOE map lights both.

    Scenes run SECONDS_PER_SCENE each, all five within the 300 frames of a headless demo run."""

    kind = "demo"
    PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
    SCENES = ("chelsea", "coffee", "chelsea+coffee", "astronaut", "rocket")
    SECONDS_PER_SCENE = 2.0
    # the main object of each photo, as fractions of the photo (x0, y0, x1, y1)
    OBJECTS = {"chelsea": (0.05, 0.0, 0.85, 1.0), "coffee": (0.12, 0.02, 0.8, 0.95),
               "astronaut": (0.2, 0.0, 0.72, 1.0), "rocket": (0.44, 0.25, 0.58, 0.97)}
    PAN = 0.12  # how far the view travels over a scene, as a fraction of the frame width
    ZOOM = (1.0, 1.2)  # scale over "just covers the frame", at the start and the end of a scene

    def open(self) -> None:
        from edge_saliency import samples

        self.photos = {n: samples.photo(n) for n in self.PHOTOS}
        self._shapes = {n: p.shape[:2] for n, p in self.photos.items()}

    def scene(self, index: int) -> tuple[str, float, int]:
        """(scene name, progress 0..1 through it, scene number) for frame `index`."""
        t = index / self.fps
        n = int(t // self.SECONDS_PER_SCENE)
        return self.SCENES[n % len(self.SCENES)], (t % self.SECONDS_PER_SCENE) / self.SECONDS_PER_SCENE, n

    def _view(self, name: str, size: tuple[int, int], u: float, n: int) -> np.ndarray:
        """The 2x3 affine map photo -> a (w, h) tile: cover the tile, zoom in slowly, pan sideways."""
        w, h = size
        ph, pw = self._shapes[name]
        x0, y0, x1, y1 = self.OBJECTS[name]
        ease = 0.5 - 0.5 * math.cos(math.pi * u)  # starts and ends gently
        zoom = max(w / pw, h / ph) * (self.ZOOM[0] + (self.ZOOM[1] - self.ZOOM[0]) * ease)
        vw, vh = w / zoom, h / zoom  # the visible part of the photo, in photo pixels
        side = 1 if n % 2 == 0 else -1  # alternate the pan direction scene by scene
        pan = side * (ease - 0.5) * self.PAN * w / zoom
        cx = np.clip((x0 + x1) / 2 * pw - pan, vw / 2, pw - vw / 2)
        cy = np.clip((y0 + y1) / 2 * ph, vh / 2, ph - vh / 2)
        return np.float32([[zoom, 0, w / 2 - zoom * cx], [0, zoom, h / 2 - zoom * cy]])

    def objects(self, index: int) -> list[tuple[str, tuple[float, float, float, float]]]:
        """Each photo's main object in frame `index`: (photo name, box x0 y0 x1 y1 in frame pixels, clipped)."""
        w, h = self.size
        name, u, n = self.scene(index)
        tiles = self._tiles(name, w, h)
        out = []
        for photo, (tx, tw) in tiles:
            m = self._view(photo, (tw, h), u, n)
            ph, pw = self._shapes[photo]
            x0, y0, x1, y1 = self.OBJECTS[photo]
            bx = [tx + m[0, 0] * x * pw + m[0, 2] for x in (x0, x1)]
            by = [m[1, 1] * y * ph + m[1, 2] for y in (y0, y1)]
            out.append((photo, (max(tx, bx[0]), max(0.0, by[0]), min(tx + tw, bx[1]), min(h, by[1]))))
        return out

    @staticmethod
    def _tiles(name: str, w: int, h: int) -> list[tuple[str, tuple[int, int]]]:
        """(photo, (x, width)) for each photo of a scene: one fills the frame, two share it."""
        names = name.split("+")
        step = w // len(names)
        return [(p, (i * step, step if i < len(names) - 1 else w - i * step)) for i, p in enumerate(names)]

    def placement(self, index: int) -> tuple[str, float, float, float]:
        """Which scene frame `index` shows, where its (first) object's centre is (x, y in frame
        pixels) and the zoom over the photo's own size."""
        name, u, n = self.scene(index)
        photo, (x0, y0, x1, y1) = self.objects(index)[0]
        w, h = self.size
        tw = self._tiles(name, w, h)[0][1][1]
        return name, (x0 + x1) / 2, (y0 + y1) / 2, float(self._view(photo, (tw, h), u, n)[0, 0])

    def make(self, index: int) -> np.ndarray:
        w, h = self.size
        name, u, n = self.scene(index)
        frame = np.empty((h, w, 3), np.uint8)
        for photo, (tx, tw) in self._tiles(name, w, h):
            m = self._view(photo, (tw, h), u, n)
            cv2.warpAffine(self.photos[photo], m, (tw, h), dst=frame[:, tx:tx + tw], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
        return frame

    def describe(self) -> str:
        return f"demo ({', '.join(self.PHOTOS)}, {self.size[0]}x{self.size[1]} @ {self.fps:g} FPS)"


STAMP_BITS = 32
STAMP_CELL = (16, 12)  # (w, h) of one bit's block in the top-left corner


def stamp(img: np.ndarray, value: int) -> None:
    """Write `value` as a 32-bit black/white barcode into the image's top rows (in place)."""
    cw, ch = STAMP_CELL
    for b in range(STAMP_BITS):
        img[0:ch, b * cw:(b + 1) * cw] = 255 if (value >> b) & 1 else 0


def read_stamp(img: np.ndarray) -> int:
    """Inverse of `stamp` (robust to mild blending: reads each cell's centre against mid-grey)."""
    cw, ch = STAMP_CELL
    row = img[ch // 2, cw // 2:STAMP_BITS * cw:cw]
    lum = row.mean(axis=-1) if row.ndim == 2 else row
    return int(sum(1 << b for b, v in enumerate(lum) if v > 127))


class SyntheticSource(GeneratedSource):
    """A moving test pattern with the frame number stamped in (see `read_stamp`): measures
    latency and lag exactly, with no camera."""

    kind = "synthetic"

    def open(self) -> None:
        w, h = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._xx, self._yy = xx, yy
        self._base = np.dstack([(xx / w * 255), (yy / h * 255), np.full_like(xx, 96)]).astype(np.uint8)

    def make(self, index: int) -> np.ndarray:
        w, h = self.size
        img = self._base.copy()
        cx = int(w * (0.5 + 0.3 * math.sin(index / 20)))
        cy = int(h * (0.5 + 0.3 * math.cos(index / 27)))
        cv2.circle(img, (cx, cy), h // 6, (30, 200, 240), -1)
        stamp(img, index)
        return img

    def describe(self) -> str:
        return f"synthetic test pattern ({self.size[0]}x{self.size[1]} @ {self.fps:g} FPS, stamped)"


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m and m.group(1).upper() != "NO")


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


def make_source(spec: str | None, image_fps: float = 1.0) -> Source:
    """--source text -> an unopened Source (raises SourceError on text that names nothing)."""
    if spec is None or spec == "auto":
        raise ValueError("use open_source() for the automatic choice")
    text = spec.strip()
    low = text.lower()
    if low == "demo":
        return DemoSource("demo")
    if low in ("synthetic", "testsrc"):
        return SyntheticSource("synthetic")
    if text.isdigit() or re.fullmatch(r"/dev/video\d+", text):
        return WebcamSource(text)
    if low.startswith(STREAM_SCHEMES):
        return StreamSource(text)
    if " ! " in text or "appsink" in low:
        return GStreamerSource(text)
    if low.startswith("file://"):
        text = text[len("file://"):]
    p = Path(text).expanduser()
    if p.is_dir():
        return ImageSource(str(p), fps=image_fps)
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTS:
            return ImageSource(str(p), fps=image_fps)
        return VideoFileSource(str(p))
    if "://" in text:
        raise SourceError(f"unsupported URL scheme in --source {_redact(text)!r} "
                          f"(supported: {', '.join(s[:-3] for s in STREAM_SCHEMES)})")
    raise SourceError(f"--source {text!r} is not a camera index, file, folder, URL, GStreamer pipeline, "
                      "'demo' or 'synthetic' (no such file)")


def open_source(spec: str | None, image_fps: float = 1.0, log_fn=None) -> Source:
    """Make and open a source. spec None/'auto': webcam 0 if it opens, else the demo."""
    if spec is None or spec == "auto":
        cam = WebcamSource("0")
        if not sys.platform.startswith("linux") or os.path.exists("/dev/video0"):
            try:
                cam.open()
                return cam
            except SourceError:
                pass
        if log_fn:
            log_fn("no camera found (camera 0): using the built-in demo source")
        src = DemoSource("demo")
        src.open()
        return src
    src = make_source(spec, image_fps=image_fps)
    src.open()
    return src
