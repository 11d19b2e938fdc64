"""The serve page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
Selenium loads the page, the stream's <img> receives frames (naturalWidth > 0, pixels change), the
top-k table fills, and a view button switches the stream (the server sees a viewer of that view)."""
from __future__ import annotations

import os
import shutil

import pytest

from serve_util import metric_value, request, running, wait_for

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
        assert wait_for(lambda: d.engine.latest, 60)
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
