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

import time
from pathlib import Path

from edge_saliency.errors import UserError
from edge_saliency.pipeline.capture import Capture
from edge_saliency.pipeline.frame_loop import FrameLoop, StopSignal
from edge_saliency.pipeline.render import Renderer
from edge_saliency.pipeline.sinks import ContactSheet, JsonLog, Overlay, Recorder
from edge_saliency.pipeline.window import LiveWindow, Window, WindowUnavailable
from edge_saliency.runtime import providers
from edge_saliency.runtime.sysdeps import window_unavailable

AUTO_MAX_FRAMES = 300
AUTO_DURATION = 10.0


def live_loop(model, capture: Capture, renderer: Renderer, window: Window | None = None,
              recorder: Recorder | None = None, json_log: JsonLog | None = None,
              contact: ContactSheet | None = None, say=print, **loop_args) -> tuple[FrameLoop, LiveWindow | None]:
    """`run`'s frame loop: overlay -> recording -> contact sheet -> window -> JSON log.
    loop_args: FrameLoop's (max_frames, duration, topk, class_index, stop, status_every)."""
    loop = FrameLoop(model, capture, poll=0.03 if window is not None else 0.25, say=say, **loop_args)
    shown = LiveWindow(window, renderer, say=say) if window is not None else None
    loop.sinks = [s for s in (Overlay(renderer, loop.hud), recorder, contact, shown, json_log) if s is not None]
    return loop, shown


def engine_summary(model) -> str:
    """'ORT providers: cuda, cpu' or 'openvino, chosen by auto: openvino 3.10 ms, onnxruntime 4.20 ms'."""
    if model.engine_name == "onnxruntime" and model.engine_choice is None:
        return f"ORT providers: {', '.join(providers.short_name(p) for p in model.providers)}"
    text = model.engine_name
    if model.engine_choice is not None:
        figures = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in model.engine_choice["median_s"].items())
        text += f", chosen by auto: {figures}"
    return text


def run_live(cfg, default_model, say=None) -> int:
    """`edge-saliency run` with its settings (settings.resolve("run", ...): cfg.view, cfg.record ...).
    default_model: log_fn -> the path of the model to use when cfg.model is None."""
    from edge_saliency.runtime.model import SaliencyModel
    from edge_saliency.pipeline.sources import open_source

    say = say or (lambda m: print(m, flush=True))
    no_window = None if cfg.headless else window_unavailable()
    headless = cfg.headless or no_window is not None
    auto = not cfg.headless and no_window is not None
    max_frames, duration = cfg.max_frames, cfg.duration
    record, contact_path = cfg.record, cfg.contact_sheet
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
    realtime = (not headless) if cfg.realtime is None else cfg.realtime

    # cheap checks of output paths before the (possibly slow) model and camera
    recorder = Recorder(record) if record else None
    contact = ContactSheet(contact_path) if contact_path else None
    json_log = None

    model_path = cfg.model or str(default_model(log_fn=say))
    model = SaliencyModel(model_path, provider=cfg.provider, threads=cfg.threads, engine=cfg.engine,
                          gpu=providers.gpu_options(cfg))
    class_index = model.class_index(cfg["class"]) if cfg["class"] else None
    if class_index is not None and not model.has_class_input:
        raise UserError(f"{model_path} was exported without a class_index input; re-export with --class-input to use --class")
    try:
        renderer = Renderer(view=cfg.view, alpha=cfg.alpha, colormap=cfg.colormap, hud=cfg.hud,
                            topk=cfg.topk, scale_names=model.info.scale_names, provider=model.provider,
                            outputs=model.outputs)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    source = open_source(cfg.source, log_fn=say)
    window = None
    stop = StopSignal().install()
    capture = Capture(source, realtime=realtime, stale_after=cfg.stale_after)
    summary = None
    try:
        if recorder is not None:
            recorder.fps = source.fps or 30.0
            recorder.timed = source.live and not capture.handoff
        json_log = JsonLog(cfg.log_json) if cfg.log_json else None
        say(f"source: {source.describe()} | model: {model.info.arch} ({Path(model_path).name}) on {model.provider} "
            f"({engine_summary(model)}) | view: {cfg.view}"
            f"{' | headless' if headless else ''}{' | ' + ('realtime' if realtime else 'fast') if source.paced else ''}")
        if not headless:
            try:
                window = Window(f"edge-saliency - {source.describe()}")
            except WindowUnavailable as exc:  # the checks above missed it: go on without the window
                say(f"{exc}: running headless (stop with Ctrl-C, or pass --headless --max-frames N)")
                headless = True
        capture.start()
        loop, shown = live_loop(model, capture, renderer, window=window, recorder=recorder, json_log=json_log,
                                contact=contact, max_frames=max_frames, duration=duration, topk=cfg.topk,
                                class_index=class_index, stop=stop.flag, status_every=5.0 if headless else None,
                                say=say)
        summary = loop.run()
        if summary.ended == "end of source" and shown is not None:
            shown.hold(stop.flag)
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
