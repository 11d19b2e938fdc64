"""The daemon's web page (GET /): the live overlay stream, the current top-k, FPS and latency, a
view switcher. Plain HTML + a few lines of JavaScript, no external resources."""
from __future__ import annotations

import html
import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-saliency</title>
<style>
 body { font: 15px system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
 header { padding: 8px 14px; background: #222; display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
 h1 { font-size: 17px; margin: 0; }
 main { display: flex; gap: 16px; padding: 12px; flex-wrap: wrap; }
 #stream { max-width: 100%; background: #000; min-width: 320px; min-height: 240px; }
 #views button { margin: 2px; padding: 4px 10px; background: #333; color: #eee; border: 1px solid #555; cursor: pointer; }
 #views button.on { background: #2a6; border-color: #4c8; }
 table { border-collapse: collapse; } td { padding: 2px 8px; }
 .bar { background: #2a6; height: 10px; }
 #health.bad { color: #f66; } #health.ok { color: #6f6; }
 .muted { color: #999; }
 nav a { color: #8cf; margin-right: 8px; } nav a.on { color: #fff; font-weight: bold; }
</style></head>
<body>
<header><h1>edge-saliency</h1>__CAMERAS__<span id="source" class="muted">__SOURCE__</span>
 <span>FPS <b id="fps">-</b></span><span>latency <b id="latency">-</b> ms</span>
 <span>inference <b id="inference">-</b> ms</span><span id="health">-</span></header>
<main>
 <div>
  <div id="views">__BUTTONS__</div>
  <img id="stream" alt="live overlay" src="__STREAM__?view=__VIEW__">
 </div>
 <div>
  <h2 style="font-size:15px">Top classes <span class="muted" id="frame"></span></h2>
  <table id="topk"></table>
  <p class="muted">salient region: <span id="box">-</span></p>
  <p class="muted">JSON: <a href="__LATEST__">api/latest</a> · <a href="/metrics">metrics</a> · <a href="/healthz">healthz</a></p>
 </div>
</main>
<script>
const VIEWS = __VIEWS__;
let view = __VIEW_JSON__;
const STREAM = __STREAM_JSON__, LATEST = __LATEST_JSON__;
const img = document.getElementById('stream');
function show(v) {
  view = v;
  img.src = STREAM + '?view=' + encodeURIComponent(v);
  for (const b of document.querySelectorAll('#views button')) b.classList.toggle('on', b.dataset.view === v);
}
for (const b of document.querySelectorAll('#views button')) b.addEventListener('click', () => show(b.dataset.view));
show(view);
function text(id, t) { document.getElementById(id).textContent = t; }
async function poll() {
  try {
    const r = await fetch(LATEST, {cache: 'no-store'});
    if (r.ok) {
      const j = await r.json();
      text('fps', j.fps.toFixed(1));
      text('latency', j.latency_ms.toFixed(0));
      text('inference', (j.timings_ms.inference || 0).toFixed(1));
      text('frame', 'frame ' + j.frame);
      text('box', j.box ? j.box.join(', ') : '-');
      const t = document.getElementById('topk');
      t.replaceChildren(...j.topk.map(([label, score]) => {
        const tr = document.createElement('tr');
        const a = document.createElement('td'); a.textContent = label;
        const b = document.createElement('td'); b.textContent = (100 * score).toFixed(1) + '%';
        const c = document.createElement('td'); const bar = document.createElement('div');
        bar.className = 'bar'; bar.style.width = Math.round(120 * score) + 'px'; c.appendChild(bar);
        tr.append(a, b, c); return tr;
      }));
    }
    const h = await fetch('/healthz', {cache: 'no-store'});
    const hj = await h.json();
    const el = document.getElementById('health');
    el.textContent = h.ok ? 'healthy' : 'unhealthy: ' + hj.reason;
    el.className = h.ok ? 'ok' : 'bad';
  } catch (e) { text('health', 'server unreachable'); }
}
setInterval(poll, 700); poll();
</script>
</body></html>
"""


def render_page(views: list[str], view: str, source: str, camera: str | None = None,
                cameras: list[str] | tuple = ()) -> bytes:
    """camera: None for the default camera's page at / (plain URLs), else that camera's (/cameras/NAME/);
    cameras: every camera's name, linked in the header when there are several."""
    buttons = "".join(f'<button type="button" data-view="{html.escape(v)}">{html.escape(v)}</button>' for v in views)
    stream, latest = ("stream.mjpg", "api/latest") if camera is None else (
        f"/cameras/{camera}/stream.mjpg", f"/api/cameras/{camera}/latest")
    nav = ""
    if len(cameras) > 1:
        current = camera or cameras[0]
        nav = "<nav>" + "".join(f'<a href="/cameras/{html.escape(c)}/"{" class=on" if c == current else ""}>'
                                f'{html.escape(c)}</a>' for c in cameras) + "</nav>"
    page = (PAGE.replace("__BUTTONS__", buttons).replace("__SOURCE__", html.escape(source))
            .replace("__CAMERAS__", nav).replace("__STREAM__", html.escape(stream)).replace("__LATEST__", html.escape(latest))
            .replace("__STREAM_JSON__", json.dumps(stream)).replace("__LATEST_JSON__", json.dumps(latest))
            .replace("__VIEWS__", json.dumps(views)).replace("__VIEW_JSON__", json.dumps(view))
            .replace("__VIEW__", html.escape(view)))
    return page.encode("utf-8")
