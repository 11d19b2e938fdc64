"""The serve page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
Selenium loads the page, the stream's <img> receives frames (naturalWidth > 0, pixels change), the
top-k table fills, and a view button switches the stream (the server sees a viewer of that view)."""
from __future__ import annotations

import os
import shutil

import pytest

from serve_util import get_json, metric_value, request, running, wait_for

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
DRIVER = shutil.which("chromedriver") or next((p for p in ("/usr/bin/chromedriver",) if os.path.exists(p)), None)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(DRIVER is None, reason="no chromedriver (apt-get install chromium-driver)"),
]

# a checksum of the image as the browser decoded it right now (same origin, so the canvas is readable)
PIXELS = """
const img = document.getElementById('stream');
if (!img.complete || img.naturalWidth === 0) return null;
const c = document.createElement('canvas');
c.width = 64; c.height = 48;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0, 64, 48);
const d = ctx.getImageData(0, 0, 64, 48).data;
let s = 0; for (let i = 0; i < d.length; i++) s = (s * 31 + d[i]) % 1000000007;
return [img.naturalWidth, img.naturalHeight, s];
"""


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(DRIVER))
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def test_page_shows_live_frames_top_k_and_switches_view(lite0_model, browser):
    with running(lite0_model) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        browser.get(d.url + "/")
        first = wait_for(lambda: browser.execute_script(PIXELS), 30)
        assert first is not None and first[:2] == [640, 480]
        changed = wait_for(lambda: (lambda p: p if p and p[2] != first[2] else None)(browser.execute_script(PIXELS)), 30)
        assert changed is not None, "the stream's image never changed"
        rows = wait_for(lambda: browser.execute_script("return document.querySelectorAll('#topk tr').length"), 20)
        assert rows == 5
        assert float(browser.execute_script("return document.getElementById('fps').textContent")) > 0

        browser.execute_script("document.querySelector('#views button[data-view=\"side\"]').click()")
        assert "view=side" in browser.execute_script("return document.getElementById('stream').src")
        side = wait_for(lambda: (lambda p: p if p and p[0] == 1280 else None)(browser.execute_script(PIXELS)), 30)
        assert side is not None and side[:2] == [1280, 480]  # the side view: frame | map
        on = browser.execute_script("return document.querySelector('#views button.on').dataset.view")
        assert on == "side"
        text = request(d, "GET", "/metrics")[2].decode()
        assert metric_value(text, "edge_saliency_stream_viewers", {"view": "side"}) == 1
        assert wait_for(lambda: metric_value(request(d, "GET", "/metrics")[2].decode(),
                                             "edge_saliency_stream_viewers", {"view": "fastcam"}) == 0, 10)


def _shot(browser, tmp_path, name):
    path = tmp_path / f"page-{name}.png"
    browser.save_screenshot(str(path))
    if os.environ.get("EDGE_SALIENCY_SHOTS"):
        os.makedirs(os.environ["EDGE_SALIENCY_SHOTS"], exist_ok=True)
        browser.save_screenshot(os.path.join(os.environ["EDGE_SALIENCY_SHOTS"], f"page-{name}.png"))
    return path


CHARTS = "return window.esCharts ? JSON.parse(JSON.stringify(window.esCharts)) : null"
LAYOUT = """
const vw = document.documentElement.clientWidth;
const boxes = [...document.querySelectorAll('#stream, .plot canvas, #topk, #views')].map(e => e.getBoundingClientRect());
return {vw: vw, scroll: document.documentElement.scrollWidth,
        right: Math.max(...boxes.map(b => b.right)), widths: boxes.map(b => Math.round(b.width))};
"""


def test_page_plots_fps_latency_and_classes_live_at_two_widths(lite0_model, browser, tmp_path):
    from edge_saliency.pipeline.sources import DemoSource

    demo = DemoSource("demo")  # scenes change every 2 s: the class timeline gets several classes
    demo.open()
    with running(lite0_model, source=demo) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        browser.get(d.url + "/")
        first = wait_for(lambda: (lambda c: c if c and c["fps"]["points"] >= 2 else None)(browser.execute_script(CHARTS)), 30)
        assert first is not None, "the FPS plot never got two points"
        assert first["latency"]["points"] == first["fps"]["points"] and first["latency"]["p99_points"] >= 2
        later = wait_for(lambda: (lambda c: c if c["fps"]["points"] >= first["fps"]["points"] + 3 else None)(
            browser.execute_script(CHARTS)), 30)
        assert later is not None and later["updates"] > first["updates"], "the plots do not update"
        assert later["classes"]["points"] >= first["classes"]["points"] + 3
        labels = wait_for(lambda: (lambda c: c["classes"]["labels"] if len(c["classes"]["labels"]) >= 2 else None)(
            browser.execute_script(CHARTS)), 30)
        assert labels and {"Egyptian cat", "espresso"} & set(labels), labels
        legend = browser.execute_script("return document.getElementById('class-legend').textContent")
        assert labels[0] in legend
        # the plotted figures are the server's: the FPS axis covers the measured rate
        hist = get_json(d, "/api/history")[1]
        assert max(p["fps"] for p in hist["points"]) <= later["fps"]["top"]
        _shot(browser, tmp_path, "desktop")
        lay = browser.execute_script(LAYOUT)
        assert lay["scroll"] <= lay["vw"] + 1 and lay["right"] <= lay["vw"] + 1, lay

        # the window's keys work on the page: 4 -> lovi; the snapshot link follows the view and downloads a JPEG
        browser.find_element("tag name", "body").send_keys("4")
        assert browser.execute_script("return document.querySelector('#views button.on').dataset.view") == "lovi"
        href = browser.execute_script("return document.getElementById('snapshot').href")
        assert href.endswith("api/frame.jpg?view=lovi")
        assert browser.execute_script("return document.getElementById('snapshot').hasAttribute('download')")
        got = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(document.getElementById('snapshot').href).then(async r => done([r.status, r.headers.get('content-type'),
              (await r.arrayBuffer()).byteLength])).catch(e => done(String(e)));""")
        assert got[0] == 200 and got[1] == "image/jpeg" and got[2] > 5000, got
        keys = browser.execute_script("return [...document.querySelectorAll('#views button kbd')].map(k => k.textContent)")
        assert keys == ["1", "2", "3", "4", "5", "6"]

        # phone width: one column, nothing wider than the screen, plots still drawn and updating
        browser.set_window_size(390, 844)
        narrow = wait_for(lambda: (lambda lay: lay if lay["vw"] <= 400 else None)(browser.execute_script(LAYOUT)), 10)
        assert narrow is not None
        assert narrow["scroll"] <= narrow["vw"] + 1 and narrow["right"] <= narrow["vw"] + 1, narrow
        assert min(narrow["widths"]) > 300  # the stream and plots take the full width, not a squeezed column
        before = browser.execute_script(CHARTS)["updates"]
        assert wait_for(lambda: browser.execute_script(CHARTS)["updates"] >= before + 2, 10)
        browser.execute_script("window.scrollTo(0, 0)")
        _shot(browser, tmp_path, "phone")
