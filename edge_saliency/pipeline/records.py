"""One frame's result as JSON-ready data: the `run --log-json` line, the daemon's /api/latest and
its MQTT message. The salient region is taken from one map: `region_map_for(outputs)`."""
from __future__ import annotations

from edge_saliency.pipeline.region import salient_region


def region_map_for(outputs) -> str:
    """The map the salient region is taken from: fastcam when the model has both maps."""
    outs = set(outputs)
    return "fastcam" if {"smoe", "recipro_cam"} <= outs else ("smoe" if "smoe" in outs else "recipro")


def result_record(frame, result, region_map: str, topk: int, t_done: float | None = None,
                  behind: int | None = None, view: str | None = None) -> dict:
    """t_done: time.perf_counter() when the result was shown/published (None: not yet);
    behind: how many frames the capture had taken beyond this one by then."""
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
