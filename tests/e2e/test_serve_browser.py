"""The serve page's JavaScript in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium, one browser and one token-protected daemon for the module (signed in the way a
person is: /?token= once, then the session cookie). Asserted in the browser, not grepped in the HTML:
the stream's <img> receives frames (naturalWidth > 0, pixels change); the header and the top-k table
show what /api/latest returned (the page's own fetches are watched); view buttons and keys 1-6 / v
switch the stream, the help line and the snapshot link (the server sees a viewer of that view); the
plots follow /api/history at desktop and phone width; the health line says when the camera is gone
and when it is back, when the session is no longer valid (and the page then stops polling, so it
does not lock its own user out), and when the server is unreachable."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_saliency.pipeline.sources import DemoSource
from browser import NEEDS_CHROMIUM, chromium
from serve_util import PATIENCE_S, Pluggable, get_json, metric_value, request, running, wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = NEEDS_CHROMIUM

TOKEN = "browser-test-token-4711"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

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

# keeps every /api/latest answer the page's own poll() receives (fetch is looked up at each call)
WATCH_LATEST = """
if (!window.seenLatest) {
  window.seenLatest = [];
  const real = window.fetch;
  window.fetch = async (...args) => {
    const r = await real(...args);
    if (String(args[0]).includes('api/latest') && r.ok) r.clone().json().then(j => window.seenLatest.push(j));
    return r;
  };
}
"""

# the header and the top-k table as shown, with the /api/latest answer of the same frame (read at once)
SHOWN = """
const t = id => document.getElementById(id).textContent;
const m = /^frame (\\d+)$/.exec(t('frame'));
if (!m) return null;
const j = (window.seenLatest || []).find(x => x.frame === +m[1]);
if (!j) return null;
return {api: j, fps: t('fps'), latency: t('latency'), inference: t('inference'), box: t('box'),
        rows: [...document.querySelectorAll('#topk tr')].map(tr => [...tr.cells].map(c => c.textContent)),
        bars: [...document.querySelectorAll('#topk .bar')].map(b => b.style.width),
        health: t('health'), healthClass: document.getElementById('health').className};
"""

HEALTH = "return [document.getElementById('health').textContent, document.getElementById('health').className]"
FRAME_NO = "const m = /(\\d+)/.exec(document.getElementById('frame').textContent); return m ? +m[1] : null"
ON = "return document.querySelector('#views button.on').dataset.view"


class PluggableDemo(Pluggable, DemoSource):
    """The demo's moving photographs (the class changes every 2 s) from a camera that can be
    unplugged (`plug.clear()`) and plugged back in."""

    kind = "pluggable"

    def __init__(self, spec="demo", fps=30.0, size=(640, 480), plug=None):
        super().__init__(spec, fps, size, plug)

    def describe(self):
        return "pluggable demo camera"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    drv = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def camera():
    cam = PluggableDemo()
    cam.open()
    return cam


@pytest.fixture(scope="module")
def daemon(lite0_model, camera):
    with running(lite0_model, source=camera, token=TOKEN, stale_after=0.5) as d:
        assert wait_for(lambda: d.loop.latest), "no frames processed"
        yield d


def sign_in(browser, daemon):
    """What a person does: open the login link once; the daemon answers with a cookie and sends the
    browser on to / (the token no longer in the address bar)."""
    browser.delete_all_cookies()  # signed out (a signed-in browser is served the page at the login link as it is)
    browser.get(f"{daemon.url}/?token={TOKEN}")
    assert browser.current_url == daemon.url + "/", browser.current_url
    assert browser.execute_script("return document.getElementById('stream') !== null")


@pytest.fixture
def page(browser, daemon, camera):
    """A freshly loaded, signed-in page at desktop width, its /api/latest answers watched."""
    camera.plug.set()
    browser.set_window_size(1200, 900)
    sign_in(browser, daemon)
    browser.execute_script(WATCH_LATEST)
    return browser


def test_page_shows_live_frames_and_what_the_api_returned(page, daemon):
    first = wait_for(lambda: page.execute_script(PIXELS))
    assert first is not None and first[:2] == [640, 480]
    changed = wait_for(lambda: (lambda p: p if p and p[2] != first[2] else None)(page.execute_script(PIXELS)))
    assert changed is not None, "the stream's image never changed"

    shown = wait_for(lambda: page.execute_script(SHOWN))
    assert shown is not None, "the page never showed a frame it fetched"
    j = shown["api"]
    # one decimal of the API's figure; within 0.05, not string-equal: at an exact half (27.25) the
    # page's toFixed rounds up ("27.3") and Python's format to even ("27.2")
    assert re.fullmatch(r"\d+\.\d", shown["fps"]) and abs(float(shown["fps"]) - j["fps"]) <= 0.05, (shown["fps"], j["fps"])
    assert float(shown["fps"]) > 0
    assert abs(float(shown["latency"]) - j["latency_ms"]) <= 0.5  # shown to the ms
    assert abs(float(shown["inference"]) - j["timings_ms"]["inference"]) <= 0.05
    assert shown["box"] == ", ".join(str(v) for v in j["box"])
    assert [r[0] for r in shown["rows"]] == [label for label, _ in j["topk"]] and len(shown["rows"]) == 5
    for (label, score), row, bar in zip(j["topk"], shown["rows"], shown["bars"]):
        assert abs(float(row[1].rstrip("%")) - 100 * score) <= 0.05 and row[1].endswith("%"), (row, score)
        assert bar == f"{round(100 * score)}px"
    assert shown["health"] == "healthy" and shown["healthClass"] == "ok"

    # the figures go on updating: a later frame, shown with its own API answer
    later = wait_for(lambda: (lambda s: s if s and s["api"]["frame"] > j["frame"] else None)(page.execute_script(SHOWN)))
    assert later is not None, "the page stopped updating"


def test_view_buttons_and_keys_switch_the_stream_help_and_snapshot(page, daemon):
    assert page.execute_script(ON) == "fastcam"
    assert page.execute_script("return document.getElementById('view-help').textContent") == "fastcam: SMOE x Recipro-CAM"
    assert wait_for(lambda: metric_value(request(daemon, "GET", "/metrics", headers=AUTH)[2].decode(),
                                         "edge_saliency_stream_viewers", {"view": "fastcam"}) == 1)

    page.execute_script("document.querySelector('#views button[data-view=\"side\"]').click()")
    assert page.execute_script(ON) == "side"
    assert page.execute_script("return document.getElementById('stream').src").endswith("stream.mjpg?view=side")
    assert page.execute_script("return document.getElementById('view-help').textContent") == "side: frame | map"
    side = wait_for(lambda: (lambda p: p if p and p[0] == 1280 else None)(page.execute_script(PIXELS)))
    assert side is not None and side[:2] == [1280, 480]  # the side view: frame | map
    text = request(daemon, "GET", "/metrics", headers=AUTH)[2].decode()
    assert metric_value(text, "edge_saliency_stream_viewers", {"view": "side"}) == 1
    assert wait_for(lambda: metric_value(request(daemon, "GET", "/metrics", headers=AUTH)[2].decode(),
                                         "edge_saliency_stream_viewers", {"view": "fastcam"}) == 0)

    body = page.find_element("tag name", "body")
    body.send_keys("v")  # the next view after side
    assert page.execute_script(ON) == "raw"
    assert page.execute_script("return document.getElementById('view-help').textContent") == "raw: frame only"
    body.send_keys("4")
    assert page.execute_script(ON) == "lovi"
    assert page.execute_script("return document.getElementById('stream').src").endswith("stream.mjpg?view=lovi")
    keys = page.execute_script("return [...document.querySelectorAll('#views button kbd')].map(k => k.textContent)")
    assert keys == ["1", "2", "3", "4", "5", "6"]

    # the snapshot link follows the view, is a download named after the view and the time, and is a JPEG
    href = page.execute_script("return document.getElementById('snapshot').href")
    assert href.endswith("api/frame.jpg?view=lovi")
    name = page.execute_script("""
        const a = document.getElementById('snapshot');
        a.addEventListener('click', e => e.preventDefault(), {once: true});  // no download dialog in the test
        a.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}));
        return a.download;""")
    assert re.fullmatch(r"edge-saliency-lovi-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z\.jpg", name), name
    got = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('snapshot').href).then(async r => done([r.status, r.headers.get('content-type'),
          (await r.arrayBuffer()).byteLength])).catch(e => done(String(e)));""")
    assert got[0] == 200 and got[1] == "image/jpeg" and got[2] > 5000, got


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


def test_page_plots_fps_latency_and_classes_live_at_two_widths(page, daemon, tmp_path):
    browser, d = page, daemon  # the demo's scenes change every 2 s: the class timeline gets several classes
    first = wait_for(lambda: (lambda c: c if c and c["fps"]["points"] >= 2 else None)(browser.execute_script(CHARTS)))
    assert first is not None, "the FPS plot never got two points"
    assert first["latency"]["points"] == first["fps"]["points"] and first["latency"]["p99_points"] >= 2
    later = wait_for(lambda: (lambda c: c if c["fps"]["points"] >= first["fps"]["points"] + 3 else None)(
        browser.execute_script(CHARTS)))
    assert later is not None and later["updates"] > first["updates"], "the plots do not update"
    assert later["classes"]["points"] >= first["classes"]["points"] + 3
    labels = wait_for(lambda: (lambda c: c["classes"]["labels"] if len(c["classes"]["labels"]) >= 2 else None)(
        browser.execute_script(CHARTS)))
    assert labels and {"Egyptian cat", "espresso"} & set(labels), labels
    legend = browser.execute_script("return document.getElementById('class-legend').textContent")
    assert labels[0] in legend
    # the plotted figures are the server's: the FPS axis covers the measured rate
    hist = get_json(d, "/api/history", headers=AUTH)[1]
    assert max(p["fps"] for p in hist["points"]) <= later["fps"]["top"]
    _shot(browser, tmp_path, "desktop")
    lay = browser.execute_script(LAYOUT)
    assert lay["scroll"] <= lay["vw"] + 1 and lay["right"] <= lay["vw"] + 1, lay

    # phone width: one column, nothing wider than the screen, plots still drawn and updating
    browser.set_window_size(390, 844)
    narrow = wait_for(lambda: (lambda lay: lay if lay["vw"] <= 400 else None)(browser.execute_script(LAYOUT)))
    assert narrow is not None
    assert narrow["scroll"] <= narrow["vw"] + 1 and narrow["right"] <= narrow["vw"] + 1, narrow
    assert min(narrow["widths"]) > 300  # the stream and plots take the full width, not a squeezed column
    before = browser.execute_script(CHARTS)["updates"]
    assert wait_for(lambda: browser.execute_script(CHARTS)["updates"] >= before + 2)
    browser.execute_script("window.scrollTo(0, 0)")
    _shot(browser, tmp_path, "phone")


def test_page_says_when_the_camera_is_gone_and_when_it_is_back(page, daemon, camera):
    assert wait_for(lambda: page.execute_script(HEALTH) == ["healthy", "ok"])
    camera.plug.clear()
    try:
        gone = wait_for(lambda: (lambda h: h if h[0].startswith("unhealthy:") else None)(page.execute_script(HEALTH)))
        assert gone is not None, page.execute_script(HEALTH)
        assert gone[1] == "bad" and "no frames from pluggable demo camera" in gone[0] and "reconnecting" in gone[0], gone
    finally:
        camera.plug.set()
    assert wait_for(lambda: page.execute_script(HEALTH) == ["healthy", "ok"]), page.execute_script(HEALTH)
    frame = page.execute_script(FRAME_NO)
    assert wait_for(lambda: (page.execute_script(FRAME_NO) or 0) > frame), "frames did not come back on the page"


def test_page_says_when_the_session_is_no_longer_valid_and_stops_polling(page, daemon, caplog):
    """An expired (here: forged) session cookie: every request of the page is refused (401). The page
    says so and stops polling; were it to go on (a poll every 0.7 s, the plots every 1 s), its failed
    requests would lock its own address out (10 failures: 429 for a minute) and it would go on saying
    "healthy" (/healthz needs no token) while nothing on it updates."""
    from edge_saliency.serve.http import COOKIE

    assert wait_for(lambda: page.execute_script(HEALTH) == ["healthy", "ok"])
    caplog.set_level(logging.WARNING, logger="edge_saliency")
    page.delete_cookie(COOKIE)
    page.add_cookie({"name": COOKIE, "value": "1.forged.0000", "path": "/", "httpOnly": True})
    said = wait_for(lambda: (lambda h: h if h[1] == "bad" else None)(page.execute_script(HEALTH)))
    assert said is not None and said[0].startswith("not signed in"), page.execute_script(HEALTH)
    assert "?token=" in said[0]
    refused = lambda: sum("invalid or expired session cookie" in r.getMessage() for r in caplog.records)  # noqa: E731
    assert 1 <= refused() <= 2  # the poll's and (maybe) the plots' request in flight: no more
    # a window in which the page must make no further request (3 poll periods; not a deadline)
    assert wait_for(lambda: refused() > 2, timeout=2.5) is None, f"the page went on polling: {refused()} refusals"
    assert page.execute_script(HEALTH)[0] == said[0]  # and is not overwritten by /healthz's "healthy"
    sign_in(page, daemon)  # not locked out: signing in again works at once
    page.execute_script(WATCH_LATEST)
    assert wait_for(lambda: page.execute_script(SHOWN)), "the page did not come back after signing in again"


def test_page_says_when_the_server_is_unreachable(browser, lite0_onnx, tmp_path):
    """A real `serve` process (an in-process daemon's stop leaves the browser's keep-alive connection
    answering), stopped as systemd stops it (SIGTERM)."""
    (tmp_path / "c.toml").write_text(f'model = "{lite0_onnx}"\nsource = "synthetic"\nlisten = "127.0.0.1:0"\nthreads = 1\n')
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "EDGE_SALIENCY_TOKEN")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "serve", "--config", "c.toml"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), (url, proc.poll())
        browser.get(url + "/")
        assert wait_for(lambda: browser.execute_script(HEALTH) == ["healthy", "ok"]), browser.execute_script(HEALTH)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=PATIENCE_S) == 0
        assert wait_for(lambda: browser.execute_script(HEALTH)[0] == "server unreachable"), browser.execute_script(HEALTH)
    finally:
        if proc.poll() is None:
            proc.kill()
