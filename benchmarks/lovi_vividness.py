"""How vivid the LOVI view is: mean saturation and hue spread of the overlay, before and after the
display normalisation (edge_saliency.pipeline.lovi.display_weights) and the value-weighted blend.

    .venv/bin/python benchmarks/lovi_vividness.py [--model m.onnx] [--every 10]

On the demo source's frames (real photographs filling the frame; every `--every`-th of its 300
frames, all five scenes), the default model's per-scale SMOE maps are coloured two ways:
  before: the LOVI formula on the maps as the model gives them, blended with a constant alpha 0.5
          (what the lovi view drew before);
  after:  the formula on display_weights (each layer's excess over its upper quartile), blended
          with opacity min(1, 2 alpha v^1.5), alpha 0.5 (what the view draws now).
Figures, for the colour map alone and for the overlay on the photo, in OpenCV's HSV:
  saturation   mean S over all pixels (0..1);
  colourful    share of pixels with S >= 0.3 and V >= 0.2 (where a hue can be seen);
  hue spread   circular standard deviation of the hue over the colourful pixels, in degrees
               (0 = one hue everywhere; the five layers sit 75 degrees apart);
  hue bins     how many of the twelve 30-degree hue bins hold at least 5% of the colourful pixels;
  photo kept   mean |overlay - photo| where the after-map is dark (v < 0.1): lower = the photo
               shows through untouched there.
Deterministic (no timing): one pass. Writes benchmarks/results/lovi_vividness.md, .json and .jpg.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_saliency.pipeline import lovi  # noqa: E402
from edge_saliency.runtime.model import SaliencyModel, ensure_default_model  # noqa: E402
from edge_saliency.pipeline.render import blend_by_value  # noqa: E402
from edge_saliency.pipeline.sources import DemoSource  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def hsv_figures(bgr: np.ndarray) -> dict:
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL).astype(np.float32)
    hue, sat, val = hsv[..., 0] * (360.0 / 256.0), hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    colourful = (sat >= 0.3) & (val >= 0.2)
    out = {"saturation": float(sat.mean()), "colourful": float(colourful.mean()), "hue_spread_deg": 0.0, "hue_bins": 0}
    if colourful.any():
        a = np.deg2rad(hue[colourful])
        r = float(np.hypot(np.cos(a).mean(), np.sin(a).mean()))
        out["hue_spread_deg"] = float(np.rad2deg(np.sqrt(-2.0 * np.log(max(r, 1e-9)))))
        bins = np.histogram(hue[colourful], bins=12, range=(0, 360))[0] / colourful.sum()
        out["hue_bins"] = int((bins >= 0.05).sum())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="edge-saliency ONNX file (default: the pretrained EfficientNet-Lite0)")
    ap.add_argument("--every", type=int, default=10, help="take every N-th demo frame (default: %(default)s)")
    args = ap.parse_args(argv)
    model = SaliencyModel(args.model or ensure_default_model(), provider="cpu", threads=1)
    demo = DemoSource("demo")
    demo.open()
    total = int(demo.fps * demo.SECONDS_PER_SCENE * len(demo.SCENES))
    rows = {k: [] for k in ("map_before", "map_after", "overlay_before", "overlay_after")}
    kept = {"before": [], "after": []}
    strips = []
    for i in range(0, total, args.every):
        frame = demo.make(i)
        h, w = frame.shape[:2]
        scales = model.predict(frame).smoe_scales
        before = cv2.resize(lovi.lovi_bgr_u8(scales), (w, h), interpolation=cv2.INTER_LINEAR)
        after = cv2.resize(lovi.lovi_display_bgr_u8(scales), (w, h), interpolation=cv2.INTER_LINEAR)
        ov_before = cv2.addWeighted(frame, 0.5, before, 0.5, 0.0)
        ov_after = blend_by_value(frame, after, 0.5)
        for k, img in (("map_before", before), ("map_after", after), ("overlay_before", ov_before),
                       ("overlay_after", ov_after)):
            rows[k].append(hsv_figures(img))
        dark = after.max(axis=-1) < 0.1 * 255
        for k, img in (("before", ov_before), ("after", ov_after)):
            kept[k].append(float(np.abs(img.astype(int) - frame)[dark].mean()) if dark.any() else 0.0)
        if i % (total // 5) == args.every * 2:  # one frame per scene for the picture
            strips.append(np.hstack([cv2.resize(x, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
                                     for x in (frame, ov_before, ov_after)]))
    summary = {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in rows.items()}
    summary["photo_kept"] = {k: float(np.mean(v)) for k, v in kept.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lovi_vividness.json").write_text(json.dumps({"frames": len(rows["map_after"]), "every": args.every,
                                                              "summary": summary, "per_frame": rows}, indent=1))
    lines = [
        "# LOVI vividness: before and after the display normalisation",
        "",
        f"`python benchmarks/lovi_vividness.py --every {args.every}`: {len(rows['map_after'])} demo frames "
        "(all five scenes), default model, alpha 0.5. Means over the frames. Deterministic (no timing).",
        "",
        "| | saturation | colourful pixels | hue spread (deg) | hue bins >= 5% |",
        "|---|---|---|---|---|",
    ]
    for k, name in (("map_before", "map alone, before"), ("map_after", "map alone, after"),
                    ("overlay_before", "overlay on the photo, before"), ("overlay_after", "overlay on the photo, after")):
        s = summary[k]
        lines.append(f"| {name} | {s['saturation']:.3f} | {s['colourful'] * 100:.0f}% | {s['hue_spread_deg']:.1f} | "
                     f"{s['hue_bins']:.1f} |")
    lines += ["", f"Where the new map is dark (no layer stands out), mean |overlay - photo|: before "
                  f"{summary['photo_kept']['before']:.1f}, after {summary['photo_kept']['after']:.1f} (grey levels; "
                  "lower = the photo shows through untouched).", "",
              "Picture: `lovi_vividness.jpg`, one frame per scene: photo | before | after."]
    (RESULTS / "lovi_vividness.md").write_text("\n".join(lines) + "\n")
    sheet = np.vstack(strips)
    cv2.imwrite(str(RESULTS / "lovi_vividness.jpg"), sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
