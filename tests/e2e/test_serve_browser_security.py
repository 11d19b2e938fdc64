"""The daemon against a real browser on a hostile page: headless Chromium (Debian's chromium +
chromium-driver, Selenium), with --host-resolver-rules mapping attacker.example and evil.example to
127.0.0.1 (what DNS rebinding achieves), so every request really is the browser's own:

- a page on evil.example (another origin) tries a no-cors JSON POST, a text/plain POST, an HTML form
  POST and an <img> of /api/frame.jpg: none starts a job or gets a frame; the daemon logs each;
- the daemon's own address under the name attacker.example gets 421 for the page and its API;
- the daemon's page cannot be framed by another origin (refused, and frame-ancestors 'none')."""
from __future__ import annotations

import http.server
import logging
import threading

import pytest

from serve_util import running, wait_for
from browser import NEEDS_CHROMIUM, chromium

pytestmark = NEEDS_CHROMIUM

EVIL = """<!doctype html><html><body>
<img id="frame" src="{target}/api/frame.jpg">
<iframe id="frame2" src="{target}/"></iframe>
<form id="form" method="post" action="{target}/api/explain" enctype="text/plain" target="sink">
  <input name='{{"method": "fastcam", "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
window.results = {{}};
fetch("{target}/api/explain", {{method: "POST", mode: "no-cors", body: '{{"method": "fastcam"}}'}})
  .then(() => window.results.nocors = "sent", e => window.results.nocors = "error");
fetch("{target}/api/explain", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: '{{"method": "fastcam"}}'}}).then(() => window.results.plain = "sent", e => window.results.plain = "error");
fetch("{target}/api/latest").then(r => window.results.read = "read", e => window.results.read = "blocked");
document.getElementById("form").submit();
</script></body></html>"""


@pytest.fixture
def browser(tmp_path):
    drv = chromium(tmp_path / "profile", page_load_timeout=30, extra_flags=(
        "--host-resolver-rules=MAP attacker.example 127.0.0.1, MAP evil.example 127.0.0.1",))
    try:
        yield drv
    finally:
        drv.quit()


def serve_page(html: str):
    body = html.encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return srv


def test_a_page_on_another_origin_cannot_start_jobs_read_frames_or_frame_the_page(lite0_model, browser, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    with running(lite0_model) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        target = d.url  # http://127.0.0.1:PORT
        evil = serve_page(EVIL.format(target=target))
        try:
            browser.get(f"http://evil.example:{evil.server_address[1]}/")
            done = wait_for(lambda: (lambda r: r if r and len(r) == 3 else None)(
                browser.execute_script("return window.results")), 20)
            assert done is not None, browser.execute_script("return window.results")
            assert done["read"] == "blocked"  # no CORS header: the response is not readable
            width = browser.execute_script("const i = document.getElementById('frame'); "
                                           "return i.complete ? i.naturalWidth : -1")
            assert wait_for(lambda: browser.execute_script(
                "return document.getElementById('frame').complete"), 10)
            assert browser.execute_script("return document.getElementById('frame').naturalWidth") == 0, width
        finally:
            evil.shutdown()
            evil.server_close()
        msgs = [r.getMessage() for r in caplog.records]
        assert wait_for(lambda: any("refused a cross-origin POST from 'http://evil.example" in m
                                    for m in [r.getMessage() for r in caplog.records]), 10), msgs
        assert any("refused a cross-site GET (Sec-Fetch-Site)" in m or "refused a cross-origin GET" in m
                   for m in msgs), msgs
        assert any("refused a cross-site iframe of GET" in m for m in msgs), msgs
        assert d.jobs._jobs == {}  # not one job started


def test_dns_rebinding_gets_421_in_the_browser(lite0_model, browser, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    with running(lite0_model) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        port = d.address[1]
        browser.get(f"http://attacker.example:{port}/")  # the attacker's name, the device's address
        text = browser.execute_script("return document.body.innerText")
        assert "does not answer to that Host" in text
        status = browser.execute_script(
            "return fetch('/api/frame.jpg').then(r => r.status)")
        assert status == 421
        assert any(f"refused a request for Host 'attacker.example:{port}'" in r.getMessage() for r in caplog.records)
        # the same browser at the real address: the page works
        browser.get(f"http://127.0.0.1:{port}/")
        assert browser.execute_script("return document.getElementById('stream') !== null")
