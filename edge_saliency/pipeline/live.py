"""`edge-saliency run`: the live overlay. capture -> infer -> render -> sinks, one frame at a time.

    edge-saliency run                                   # default model, webcam 0 or the demo source
    edge-saliency run --model m.onnx --source 0 --view recipro
    edge-saliency run --source video.mp4 --view lovi --record out.mp4 --headless --max-frames 500

With no display (SSH, CI) or an OpenCV without a GUI backend (opencv-python-headless, the default
install) and no --headless, it says so in one line and runs headless for a bounded time (300 frames
or 10 s unless --max-frames/--duration say otherwise), records the overlay and a contact sheet under
./runs/, prints where they are and the FPS reached, and exits 0.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_saliency.runtime import providers
from edge_saliency.pipeline.capture import Capture
from edge_saliency.errors import UserError
from edge_saliency.pipeline.region import salient_region
from edge_saliency.pipeline.render import COLORMAPS, VIEW_HELP, VIEWS, HudStats, Renderer
from edge_saliency.pipeline.sinks import ContactSheet, JsonLog, Recorder, Window, WindowUnavailable, has_display  # noqa: F401
from edge_saliency.runtime.sysdeps import window_unavailable

log = logging.getLogger("edge_saliency")

AUTO_MAX_FRAMES = 300
AUTO_DURATION = 10.0
KEY_VIEWS = {ord(str(i + 1)): v for i, v in enumerate(VIEWS)}
HELP_SECONDS = 6.0  # the window shows the key help this long after it opens (and again on '?')


class FpsMeter:
    """Frames per second over the last `window` seconds of display times, counted from the loop's
    start: the first frame already has a measured rate (1 / its own time), never 0."""

    def __init__(self, t_start: float, window: float = 1.0):
        self.window = window
        self.times: list[float] = [t_start]

    def rate(self, now: float) -> float:
        """The rate if a frame is shown at `now` (call before drawing the HUD of that frame)."""
        times = [t for t in self.times if now - t <= self.window] or self.times[-1:]
        return len(times) / max(now - times[0], 1e-6)  # frames after times[0], this one included

    def tick(self, t: float) -> None:
        self.times = [x for x in self.times if t - x <= self.window] + [t]


@dataclass
class Summary:
    frames: int = 0
    seconds: float = 0.0
    ended: str = ""  # why the loop stopped
    stage_seconds: dict = field(default_factory=dict)  # summed per stage
    behind_at_pickup: list = field(default_factory=list)  # newest captured id - processed id, when taken
    behind_at_display: list = field(default_factory=list)  # the same when the frame is shown
    latency: list = field(default_factory=list)  # capture -> shown, seconds

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def mean_ms(self, stage: str) -> float:
        return 1e3 * self.stage_seconds.get(stage, 0.0) / max(1, self.frames)

    @property
    def outside_inference(self) -> float:
        """Share of the loop's wall time not spent in session.run."""
        return 1.0 - self.stage_seconds.get("inference", 0.0) / self.seconds if self.seconds > 0 else 0.0

    @property
    def own_work(self) -> float:
        """Share of the loop's wall time spent on its own work (not session.run, not waiting for frames)."""
        if self.seconds <= 0:
            return 0.0
        return 1.0 - (self.stage_seconds.get("inference", 0.0) + self.stage_seconds.get("capture_wait", 0.0)) / self.seconds


class _Stop:
    """SIGINT/SIGTERM -> a flag the loop checks (a second signal interrupts at once)."""

    def __init__(self):
        self.flag = threading.Event()
        self.reason = ""
        self._old = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.flag.is_set():
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self.flag.set()

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class LiveLoop:
    def __init__(self, model, capture: Capture, renderer: Renderer, window: Window | None = None,
                 recorder: Recorder | None = None, json_log: JsonLog | None = None,
                 contact: ContactSheet | None = None, max_frames: int | None = None,
                 duration: float | None = None, topk: int = 3, class_index: int | None = None,
                 stop: threading.Event | None = None, status_every: float | None = None, say=print):
        self.model, self.capture, self.renderer = model, capture, renderer
        self.window, self.recorder, self.json_log, self.contact = window, recorder, json_log, contact
        self.max_frames, self.duration = max_frames, duration
        self.topk, self.class_index = topk, class_index
        self.stop = stop or threading.Event()
        self.status_every = status_every
        self.say = say
        self.hud = HudStats(provider=getattr(model, "provider", ""))
        self.snapshots: list[Path] = []
        self.help_until = 0.0  # perf_counter time until which the window shows the key help
        self.help_pinned = False  # '?' turned it on for good
        self.region_map = region_map_for(getattr(model, "outputs", []))

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
            import cv2

            path = Path(f"snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{frame_id}.png")
            cv2.imwrite(str(path), out)
            self.snapshots.append(path)
            self.say(f"saved {path}")
        return True

    # ------------------------------------------------------------------ the loop
    def run(self) -> Summary:
        from edge_saliency.pipeline.render import draw_banner

        cap, model, renderer = self.capture, self.model, self.renderer
        summary = Summary(stage_seconds={k: 0.0 for k in ("capture_wait", "preprocess", "inference", "render", "sinks")})
        last_id = 0
        last_out: np.ndarray | None = None
        wait = 0.0
        ema = None
        t_start = time.perf_counter()
        t_prev = t_start
        meter = FpsMeter(t_start)
        if self.window is not None:
            self.help_until = t_start + HELP_SECONDS
        next_status = t_start + self.status_every if self.status_every else None
        poll = 0.03 if self.window else 0.25
        while True:
            if self.stop.is_set():
                summary.ended = "stopped"
                break
            now = time.perf_counter()
            if self.duration is not None and now - t_start >= self.duration:
                summary.ended = "duration"
                break
            if self.max_frames is not None and summary.frames >= self.max_frames:
                summary.ended = "max-frames"
                break
            if self.window is not None and self.window.closed:
                summary.ended = "window closed"
                break
            t0 = time.perf_counter()
            frame = cap.get(last_id, timeout=poll)
            t1 = time.perf_counter()
            wait += t1 - t0
            if frame is None:
                if cap.finished(last_id):
                    summary.ended = "end of source"
                    break
                if self.window is not None:
                    shown = last_out
                    if cap.no_signal:
                        shown = (last_out.copy() if last_out is not None else np.zeros((480, 640, 3), np.uint8))
                        draw_banner(shown, f"NO SIGNAL - reconnecting ({cap.signal_lost_for:.0f} s)")
                    if shown is not None and not self.handle_key(self.window.show(self._with_help(shown)), last_out, last_id):
                        summary.ended = "quit"
                        break
                continue
            summary.behind_at_pickup.append(cap.latest_id - frame.id)
            last_id = frame.id
            result = model.predict(frame.image, class_index=self.class_index, topk=max(self.topk, 1))
            t2 = time.perf_counter()
            self.hud.capture_wait = wait if ema is None else 0.9 * self.hud.capture_wait + 0.1 * wait
            self.hud.preprocess = _ema(self.hud.preprocess, result.timings["preprocess"], ema)
            self.hud.inference = _ema(self.hud.inference, result.timings["inference"], ema)
            self.hud.fps = meter.rate(t2)
            out = renderer.render(frame.image, result, self.hud)
            t3 = time.perf_counter()
            key = -1
            if self.recorder is not None:
                self.recorder.write(out, frame.t_capture)
            if self.contact is not None:
                self.contact.offer(frame.id, out)
            if self.window is not None:
                key = self.window.show(self._with_help(out))
            t4 = time.perf_counter()
            meter.tick(t4)
            summary.behind_at_display.append(cap.latest_id - frame.id)
            summary.latency.append(t4 - frame.t_capture)
            if self.json_log is not None:
                self.json_log.write(self._record(frame, result, t4, summary.behind_at_display[-1]))
            last_out = out
            summary.frames += 1
            st = summary.stage_seconds
            st["capture_wait"] += wait
            st["preprocess"] += result.timings["preprocess"]
            st["inference"] += result.timings["inference"]
            st["render"] += t3 - t2
            st["sinks"] += t4 - t3
            self.hud.render = _ema(self.hud.render, t3 - t2, ema)
            t_prev = t4
            ema = True
            wait = 0.0
            if not self.handle_key(key, out, frame.id):
                summary.ended = "quit"
                break
            if next_status is not None and t4 >= next_status:
                next_status = t4 + self.status_every
                self.say(f"frame {frame.id}: {summary.frames / (t4 - t_start):.1f} FPS, {result.label} {result.score:.2f}")
        summary.seconds = (t_prev if summary.frames else time.perf_counter()) - t_start
        if summary.ended == "end of source" and self.window is not None and last_out is not None:
            self._hold(last_out, last_id)
        return summary

    def _with_help(self, out: np.ndarray) -> np.ndarray:
        """The window's copy of a frame: plus the key help while it is due (recordings and the
        daemon's stream never get it), else a small '? keys' hint at the bottom left."""
        full = self.help_pinned or time.perf_counter() < self.help_until
        if not (full or self.renderer.hud):
            return out
        shown = out.copy()
        self.renderer.draw_help(shown, full=full)
        return shown

    def _hold(self, last_out, last_id):
        """A finished file in a window: keep the last frame up until the user quits."""
        from edge_saliency.pipeline.render import draw_banner

        held = last_out.copy()
        draw_banner(held, "end of source - press q to quit")
        while not self.stop.is_set() and not self.window.closed:
            if (self.window.show(held, 30) & 0xFF) in (ord("q"), 27):
                break

    def _record(self, frame, result, t_display: float, behind: int) -> dict:
        return result_record(frame, result, self.region_map, self.topk, t_done=t_display, behind=behind,
                             view=self.renderer.view)


def region_map_for(outputs) -> str:
    """The map the salient region is taken from: fastcam when the model has both maps."""
    outs = set(outputs)
    return "fastcam" if {"smoe", "recipro_cam"} <= outs else ("smoe" if "smoe" in outs else "recipro")


def result_record(frame, result, region_map: str, topk: int, t_done: float | None = None,
                  behind: int | None = None, view: str | None = None) -> dict:
    """One frame's result as JSON-ready data (the `run --log-json` line, the daemon's /api/latest).

    t_done: time.perf_counter() when the result was shown/published (None: not yet)."""
    h, w = frame.image.shape[:2]
    saliency = result.map(region_map)
    region = salient_region(saliency, (w, h)) if saliency is not None else None
    rec = {"frame": frame.id, "t_capture": round(frame.wall_capture, 6)}
    if t_done is not None:
        rec["t_display"] = round(frame.wall_capture + (t_done - frame.t_capture), 6)
        rec["latency_ms"] = round((t_done - frame.t_capture) * 1e3, 2)
    if behind is not None:
        rec["behind"] = behind
    rec.update({
        "class": result.class_index,
        "label": result.label,
        "score": round(result.score, 5),
        "topk": [[label, round(score, 5)] for label, score in result.topk[:topk]],
    })
    if view is not None:
        rec["view"] = view
    rec.update({
        "map": region_map,
        "box": region["box"] if region else None,
        "centroid": region["centroid"] if region else None,
        "region_area": region["area"] if region else None,
        "timings_ms": {k: round(v * 1e3, 2) for k, v in result.timings.items()},
    })
    return rec


def _ema(old: float, new: float, started) -> float:
    return new if not started else 0.9 * old + 0.1 * new


# ---------------------------------------------------------------------- CLI
ENGINE_CHOICES = ("onnxruntime", "openvino", "auto")


def engine_summary(model) -> str:
    """'ORT providers: cuda, cpu' or 'openvino, chosen by auto: openvino 3.10 ms, onnxruntime 4.20 ms'."""
    if model.engine_name == "onnxruntime" and model.engine_choice is None:
        return f"ORT providers: {', '.join(providers.short_name(p) for p in model.providers)}"
    text = model.engine_name
    if model.engine_choice is not None:
        figures = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in model.engine_choice["median_s"].items())
        text += f", chosen by auto: {figures}"
    return text


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="live overlay: camera/video/demo -> saliency maps on screen, in a file, or in a log",
        description="Show where the model looks, live: capture -> infer -> render -> window/recording/log. "
                    "Keys in the window: 1-6 views (" + ", ".join(VIEWS) + "), v next view, h HUD, +/- alpha, "
                    "s snapshot, ? key help, q/Esc quit.")
    p.add_argument("--model", help="edge-saliency ONNX file (default: the pretrained EfficientNet-Lite0, exported on first use)")
    p.add_argument("--source", default=None,
                   help="camera index or /dev/videoN, video file, image file or folder, rtsp:// or http:// URL, "
                        "GStreamer pipeline ending in appsink, 'demo' or 'synthetic' (default: camera 0 if it opens, else demo)")
    p.add_argument("--view", default="fastcam", help=f"{' | '.join(VIEWS)} (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="map opacity over the frame, 0..1 (default: %(default)s)")
    p.add_argument("--colormap", default="jet", help="OpenCV colour map for the map views (default: %(default)s)")
    p.add_argument("--provider", default="auto", help="ONNX Runtime execution provider: auto, " + ", ".join(providers.ALIASES)
                   + "; a comma list is a fallback order (default: auto = CUDA if present, else CPU; TensorRT only "
                     "when asked for)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the engine's choice)")
    p.add_argument("--engine", default="onnxruntime", choices=ENGINE_CHOICES,
                   help="onnxruntime | openvino (pip install 'edge-saliency[openvino]') | auto: the faster here, "
                        "probed once per model and machine and cached (default: %(default)s)")
    p.add_argument("--headless", action="store_true", help="no window (automatic when there is no display)")
    p.add_argument("--record", metavar="FILE", help="write the overlay video (.mp4, .avi, .mov, .mkv)")
    p.add_argument("--log-json", metavar="FILE", help="one JSON line per frame: id, timestamps, class, score, salient box and centroid")
    p.add_argument("--contact-sheet", metavar="FILE", help="PNG grid of a few frames spread over the run")
    p.add_argument("--max-frames", type=int, help="stop after N processed frames")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=None,
                      help="play files and generated sources at their own FPS, dropping frames the loop cannot keep up with "
                           "(default with a window)")
    pace.add_argument("--fast", dest="realtime", action="store_false",
                      help="process every frame of a file as fast as possible (default when headless)")
    p.add_argument("--no-hud", action="store_true", help="no labels, FPS or timings drawn on the frames")
    p.add_argument("--topk", type=int, default=3, help="labels shown in the HUD (default: %(default)s)")
    p.add_argument("--class", dest="explain_class", help="explain this class (name or index) instead of the top-1 "
                                                         "(model exported with --class-input)")
    p.add_argument("--stale-after", type=float, help="seconds without a frame before 'no signal' (default: max(1, 3/FPS))")
    providers.add_gpu_arguments(p)
    p.set_defaults(func=cmd_run)


def _check_args(args) -> None:
    if args.view not in VIEWS:
        raise UserError(f"unknown view {args.view!r}; choose from: {', '.join(VIEWS)}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.colormap not in COLORMAPS:
        raise UserError(f"unknown --colormap {args.colormap!r}; choose from: {', '.join(sorted(COLORMAPS))}")
    if args.topk < 1:
        raise UserError("--topk must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be positive")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    if args.stale_after is not None and args.stale_after <= 0:
        raise UserError("--stale-after must be positive")


def cmd_run(args) -> int:
    from edge_saliency.runtime.model import SaliencyModel
    from edge_saliency.pipeline.sources import open_source

    _check_args(args)
    say = lambda m: print(m, flush=True)  # noqa: E731
    no_window = None if args.headless else window_unavailable()
    headless = args.headless or no_window is not None
    auto = not args.headless and no_window is not None
    max_frames, duration = args.max_frames, args.duration
    record, contact_path = args.record, args.contact_sheet
    if auto:
        if max_frames is None and duration is None:
            max_frames, duration = AUTO_MAX_FRAMES, AUTO_DURATION
        if record is None or contact_path is None:
            out_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
            out_dir.mkdir(parents=True, exist_ok=True)
            record = record or str(out_dir / "overlay.mp4")
            contact_path = contact_path or str(out_dir / "contact_sheet.png")
        bounds = " or ".join(x for x in (f"{max_frames} frames" if max_frames else "", f"{duration:g} s" if duration else "") if x)
        say(f"{no_window}: running headless{' for ' + bounds if bounds else ''}, recording the overlay")
    realtime = (not headless) if args.realtime is None else args.realtime

    # cheap checks of output paths before the (possibly slow) model and camera
    recorder = Recorder(record) if record else None
    contact = ContactSheet(contact_path) if contact_path else None
    json_log = None

    model_path = args.model or str(args.default_model(log_fn=say))
    model = SaliencyModel(model_path, provider=args.provider, threads=args.threads, engine=args.engine,
                          gpu=providers.gpu_from_args(args))
    class_index = model.class_index(args.explain_class) if args.explain_class else None
    if class_index is not None and not model.has_class_input:
        raise UserError(f"{model_path} was exported without a class_index input; re-export with --class-input to use --class")
    try:
        renderer = Renderer(view=args.view, alpha=args.alpha, colormap=args.colormap, hud=not args.no_hud,
                            topk=args.topk, scale_names=model.info.scale_names, provider=model.provider,
                            outputs=model.outputs)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    source = open_source(args.source, log_fn=say)
    window = None
    stop = _Stop().install()
    capture = Capture(source, realtime=realtime, stale_after=args.stale_after)
    summary = None
    try:
        if recorder is not None:
            recorder.fps = source.fps or 30.0
            recorder.timed = source.live and not capture.handoff
        json_log = JsonLog(args.log_json) if args.log_json else None
        say(f"source: {source.describe()} | model: {model.info.arch} ({Path(model_path).name}) on {model.provider} "
            f"({engine_summary(model)}) | view: {args.view}"
            f"{' | headless' if headless else ''}{' | ' + ('realtime' if realtime else 'fast') if source.paced else ''}")
        if not headless:
            try:
                window = Window(f"edge-saliency - {source.describe()}")
            except WindowUnavailable as exc:  # the checks above missed it: go on without the window
                say(f"{exc}: running headless (stop with Ctrl-C, or pass --headless --max-frames N)")
                headless = True
        capture.start()
        loop = LiveLoop(model, capture, renderer, window=window, recorder=recorder, json_log=json_log,
                        contact=contact, max_frames=max_frames, duration=duration, topk=args.topk,
                        class_index=class_index, stop=stop.flag, status_every=5.0 if headless else None, say=say)
        summary = loop.run()
    finally:
        capture.stop()
        if window is not None:
            window.close()
        if recorder is not None:
            recorder.close()
        if json_log is not None:
            json_log.close()
        sheet = contact.close() if contact is not None else None
        stop.restore()
    why = stop.reason or summary.ended
    cs = capture.stats
    say(f"{summary.frames} frames in {summary.seconds:.1f} s: {summary.fps:.1f} FPS end to end "
        f"(inference {summary.mean_ms('inference'):.1f} ms, preprocess {summary.mean_ms('preprocess'):.1f} ms, "
        f"render {summary.mean_ms('render'):.1f} ms, capture wait {summary.mean_ms('capture_wait'):.1f} ms per frame; "
        f"{summary.own_work * 100:.0f}% loop work) - stopped: {why}")
    if cs["dropped"] or cs["skipped"] or cs["faults"]:
        say(f"capture: {cs['captured']} frames, {cs['dropped']} dropped for being stale, {cs['skipped']} unusable skipped, "
            f"{cs['faults']} faults, {cs['reconnects']} reconnects")
    if recorder is not None and recorder.frames:
        say(f"recording: {recorder.path} ({recorder.frames} frames, {recorder.fps:g} FPS)")
    if sheet is not None:
        say(f"contact sheet: {sheet}")
    if json_log is not None:
        say(f"log: {json_log.path} ({json_log.lines} lines)")
    return 0
