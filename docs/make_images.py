"""The README's pictures, made from the real demo with the real default model:

    .venv/bin/python docs/make_images.py [--model m.onnx] [--page-seconds 20] [--no-page]

  docs/images/demo_views.png  a contact sheet: six views of the demo's frames as `edge-saliency run`
                              renders them (the HUD's labels, without its FPS and timing lines), captioned;
  docs/images/page.png        the `serve` page in headless Chromium after --page-seconds of the demo
                              (needs chromium + chromedriver: `make browser`; skipped with a note
                              when they are missing).
Both are palette PNGs (256 colours) to stay under 300 KB.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_saliency.runtime.model import SaliencyModel, ensure_default_model  # noqa: E402
from edge_saliency.pipeline.render import VIEWS, Renderer, put_text  # noqa: E402
from edge_saliency.pipeline.sources import DemoSource  # noqa: E402

OUT = ROOT / "docs" / "images"
TILE = (480, 360)
LIMIT = 300_000


def save_small_png(path: Path, bgr: np.ndarray) -> int:
    """A 256-colour PNG. Maximum coverage keeps small saturated areas (the LOVI legend's pure
    magenta and blue swatches) exact, where median cut greys them."""
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    for colours in (256, 192, 128, 96):
        img = rgb.quantize(colours, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.FLOYDSTEINBERG)
        img.save(path, optimize=True)
        if path.stat().st_size <= LIMIT:
            break
    return path.stat().st_size


def pair_frames(demo: DemoSource, model) -> tuple[int, int, str, str]:
    """In the scene where two objects share the frame: the first frame, and the first frame whose
    top class differs from it (the scene's last frame if the top class never changes)."""
    per = int(demo.fps * demo.SECONDS_PER_SCENE)
    start = demo.SCENES.index("chelsea+coffee") * per
    ia = start + 2
    la = model.predict(demo.make(ia)).label
    for ib in range(ia + 3, start + per, 3):
        lb = model.predict(demo.make(ib)).label
        if lb != la:
            return ia, ib, la, lb
    return ia, start + per - 1, la, la


def contact_sheet(model, path: Path) -> int:
    demo = DemoSource("demo")
    demo.open()
    per = int(demo.fps * demo.SECONDS_PER_SCENE)
    ia, ib, la, lb = pair_frames(demo, model)
    shots = [  # (frame, view, caption)
        (int(0.6 * per), "fastcam", "fastcam: SMOE x Recipro-CAM"),
        (int(1.5 * per), "lovi", "lovi: one colour per layer, early to late"),
        (ia, "heatmap", "heatmap (SMOE): both objects light up"),
        (ia, "recipro", f"recipro: where '{la}' is"),
        (ib, "recipro", f"recipro: where '{lb}' is"),
        (int(3.6 * per), "lovi", "lovi on the astronaut"),
    ]
    tiles = []
    for index, view, caption in shots:
        frame = demo.make(index)
        result = model.predict(frame)
        r = Renderer(view=view, scale_names=model.info.scale_names, provider=model.provider, outputs=model.outputs)
        # labels only: FPS and timings from a one-off predict on a busy build machine would mislead
        img = cv2.resize(r.render(frame, result, None), TILE, interpolation=cv2.INTER_AREA)
        bar = np.full((34, TILE[0], 3), 24, np.uint8)
        put_text(bar, f"{VIEWS.index(view) + 1}  {caption}", (10, 23), 0.6, (255, 255, 255))
        tiles.append(np.vstack([bar, img]))
    gap = 4
    th, tw = tiles[0].shape[:2]
    sheet = np.full((2 * th + 3 * gap, 3 * tw + 4 * gap, 3), 16, np.uint8)
    for k, t in enumerate(tiles):
        r_, c = divmod(k, 3)
        y, x = gap + r_ * (th + gap), gap + c * (tw + gap)
        sheet[y:y + th, x:x + tw] = t
    return save_small_png(path, sheet)


def page_screenshot(model, path: Path, seconds: float) -> int | None:
    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        print("note: no chromium/chromedriver (make browser): page screenshot skipped")
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from edge_saliency.serve.config import load_config
    from edge_saliency.serve.daemon import Daemon

    demo = DemoSource("demo")
    demo.open()
    cfg = load_config(None, cli={"listen": "127.0.0.1:0", "stream_fps": "10"}, env={})
    daemon = Daemon(cfg, model=model, source=demo).start()
    profile = tempfile.mkdtemp(prefix="es-page-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1200,760", "--hide-scrollbars"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(driver))
    try:
        drv.get(daemon.url + "/")
        time.sleep(seconds)
        shot = Path(profile) / "page.png"
        drv.save_screenshot(str(shot))
        img = cv2.imread(str(shot))
        return save_small_png(path, img)
    finally:
        drv.quit()
        daemon.stop()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="edge-saliency ONNX file (default: the pretrained EfficientNet-Lite0)")
    ap.add_argument("--page-seconds", type=float, default=20.0, help="demo time before the page screenshot")
    ap.add_argument("--no-page", action="store_true", help="only the contact sheet")
    args = ap.parse_args(argv)
    model = SaliencyModel(args.model or ensure_default_model(), provider="cpu", threads=2)
    OUT.mkdir(parents=True, exist_ok=True)
    size = contact_sheet(model, OUT / "demo_views.png")
    print(f"{OUT / 'demo_views.png'}: {size / 1024:.0f} KB")
    if not args.no_page:
        size = page_screenshot(model, OUT / "page.png", args.page_seconds)
        if size:
            print(f"{OUT / 'page.png'}: {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
