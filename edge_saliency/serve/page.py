"""The daemon's web page (GET /): the live overlay stream, the current top-k, the same view
buttons (and keys 1-6, v) as the `run` window, a snapshot download, and live plots of the last
minutes: FPS, latency p50/p99 and a class timeline (from /api/history, drawn on plain canvases).
One HTML file with its own CSS and JavaScript: no external resources, works offline."""
from __future__ import annotations

import html
import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-saliency</title>
<style>
 * { box-sizing: border-box; }
 body { font: 15px system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
 header { padding: 8px 14px; background: #222; display: flex; gap: 6px 18px; align-items: baseline; flex-wrap: wrap; }
 h1 { font-size: 17px; margin: 0; }
 h2 { font-size: 15px; margin: 4px 0 6px; }
 main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(260px, 2fr); gap: 14px; padding: 12px; }
 @media (max-width: 760px) { main { grid-template-columns: minmax(0, 1fr); padding: 8px; } header { padding: 6px 8px; } }
 #stream { width: 100%; height: auto; display: block; background: #000; aspect-ratio: 4 / 3; }
 #views { display: flex; flex-wrap: wrap; gap: 4px; margin-bottom: 6px; align-items: center; }
 #views button, .btn { padding: 6px 10px; background: #333; color: #eee; border: 1px solid #555; border-radius: 4px;
   cursor: pointer; font: inherit; text-decoration: none; }
 #views button.on { background: #2a6; border-color: #4c8; }
 #views kbd { color: #9c9; font: 12px ui-monospace, monospace; margin-right: 4px; }
 .btn { margin-left: auto; }
 table { border-collapse: collapse; width: 100%; } td { padding: 2px 6px; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
 .bar { background: #2a6; height: 10px; }
 #health.bad { color: #f66; } #health.ok { color: #6f6; }
 .muted { color: #999; }
 .plot { margin-top: 10px; }
 .plot canvas { width: 100%; height: 110px; display: block; background: #181818; border: 1px solid #2c2c2c; }
 #classes-plot canvas { height: 46px; }
 .legend { font-size: 13px; color: #bbb; display: flex; flex-wrap: wrap; gap: 2px 12px; margin-top: 3px; }
 .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
 nav a { color: #8cf; margin-right: 8px; } nav a.on { color: #fff; font-weight: bold; }
</style></head>
<body>
<header><h1>edge-saliency</h1>__CAMERAS__<span id="source" class="muted">__SOURCE__</span>
 <span>FPS <b id="fps">-</b></span><span>latency <b id="latency">-</b> ms</span>
 <span>inference <b id="inference">-</b> ms</span><span id="health">-</span></header>
<main>
 <section>
  <div id="views">__BUTTONS__<a id="snapshot" class="btn" href="__FRAME__?view=__VIEW__" download>snapshot</a></div>
  <img id="stream" alt="live overlay" src="__STREAM__?view=__VIEW__">
  <p class="muted" id="view-help"></p>
 </section>
 <section>
  <h2>Top classes <span class="muted" id="frame"></span></h2>
  <table id="topk"></table>
  <div class="plot" id="fps-plot"><h2>FPS <span class="muted">last <span class="span">-</span></span></h2><canvas></canvas></div>
  <div class="plot" id="latency-plot"><h2>Latency, capture to result (ms)</h2><canvas></canvas>
   <div class="legend"><span><i style="background:#6cf"></i>p50</span><span><i style="background:#f96"></i>p99</span></div></div>
  <div class="plot" id="classes-plot"><h2>Top class over time</h2><canvas></canvas><div class="legend" id="class-legend"></div></div>
  <p class="muted">salient region: <span id="box">-</span></p>
  <p class="muted">JSON: <a href="__LATEST__">api/latest</a> · <a href="__HISTORY__">api/history</a> · <a href="/metrics">metrics</a> · <a href="/healthz">healthz</a></p>
 </section>
</main>
<script>
const VIEWS = __VIEWS__;
const HELP = __HELP__;
let view = __VIEW_JSON__;
const STREAM = __STREAM_JSON__, LATEST = __LATEST_JSON__, HISTORY = __HISTORY_JSON__, FRAME = __FRAME_JSON__;
const img = document.getElementById('stream');
function show(v) {
  view = v;
  img.src = STREAM + '?view=' + encodeURIComponent(v);
  document.getElementById('snapshot').href = FRAME + '?view=' + encodeURIComponent(v);
  document.getElementById('view-help').textContent = v + ': ' + (HELP[v] || '');
  for (const b of document.querySelectorAll('#views button')) b.classList.toggle('on', b.dataset.view === v);
}
for (const b of document.querySelectorAll('#views button')) b.addEventListener('click', () => show(b.dataset.view));
// the window's keys: 1-6 a view, v the next one
document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const all = __ALL_VIEWS__;
  if (e.key >= '1' && e.key <= '9' && VIEWS.includes(all[+e.key - 1])) show(all[+e.key - 1]);
  else if (e.key === 'v') show(VIEWS[(VIEWS.indexOf(view) + 1) % VIEWS.length]);
});
document.getElementById('snapshot').addEventListener('click', (e) => {
  e.currentTarget.download = 'edge-saliency-' + view + '-' + new Date().toISOString().replace(/[:.]/g, '-') + '.jpg';
});
show(view);
function text(id, t) { document.getElementById(id).textContent = t; }
// refused (401: the session cookie expired or the token changed; 429: locked out): say so and stop
// polling, or the page's own failed requests would keep its address locked out while it said "healthy"
const timers = [];
let refused = false;
function refusedWith(status) {
  if (status !== 401 && status !== 429) return false;
  refused = true;
  for (const t of timers) clearInterval(t);
  const el = document.getElementById('health');
  el.textContent = status === 401 ? 'not signed in (the session expired?): open this page with ?token=… again'
                                  : 'locked out after failed sign-ins: reload later';
  el.className = 'bad';
  return true;
}
async function poll() {
  if (refused) return;
  try {
    const r = await fetch(LATEST, {cache: 'no-store'});
    if (refusedWith(r.status)) return;
    if (r.ok) {
      const j = await r.json();
      text('fps', j.fps > 0 ? j.fps.toFixed(1) : '-');
      text('latency', j.latency_ms.toFixed(0));
      text('inference', (j.timings_ms.inference || 0).toFixed(1));
      text('frame', 'frame ' + j.frame);
      text('box', j.box ? j.box.join(', ') : '-');
      const t = document.getElementById('topk');
      t.replaceChildren(...j.topk.map(([label, score]) => {
        const tr = document.createElement('tr');
        const a = document.createElement('td'); a.textContent = label;
        const b = document.createElement('td'); b.className = 'num'; b.textContent = (100 * score).toFixed(1) + '%';
        const c = document.createElement('td'); const bar = document.createElement('div');
        bar.className = 'bar'; bar.style.width = Math.round(100 * score) + 'px'; c.appendChild(bar);
        tr.append(a, b, c); return tr;
      }));
    }
    const h = await fetch('/healthz', {cache: 'no-store'});
    const hj = await h.json();
    if (refused) return;
    const el = document.getElementById('health');
    el.textContent = h.ok ? 'healthy' : 'unhealthy: ' + hj.reason;
    el.className = h.ok ? 'ok' : 'bad';
  } catch (e) { text('health', 'server unreachable'); }
}
timers.push(setInterval(poll, 700)); poll();

// ---- plots: plain canvas, redrawn from /api/history every second
const charts = window.esCharts = {updates: 0, fps: {points: 0}, latency: {points: 0}, classes: {points: 0, labels: []}};
const PALETTE = ['#4c8', '#6cf', '#f96', '#c8f', '#fd5', '#f6a', '#8df', '#bd6', '#fa7', '#aaf'];
const classColour = {};
function colourOf(label) {
  if (!(label in classColour)) classColour[label] = PALETTE[Object.keys(classColour).length % PALETTE.length];
  return classColour[label];
}
function canvas2d(id) {
  const c = document.querySelector('#' + id + ' canvas');
  const r = window.devicePixelRatio || 1, w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * r) || c.height !== Math.round(h * r)) { c.width = Math.round(w * r); c.height = Math.round(h * r); }
  const g = c.getContext('2d'); g.setTransform(r, 0, 0, r, 0, 0); g.clearRect(0, 0, w, h);
  g.font = '11px system-ui, sans-serif';
  return [g, w, h];
}
function axes(g, w, h, top, t0, t1, unit) {
  g.strokeStyle = '#333'; g.fillStyle = '#888'; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = 4 + (h - 18) * (1 - f);
    g.beginPath(); g.moveTo(34, y); g.lineTo(w - 4, y); g.stroke();
    g.fillText((top * f).toFixed(top * f >= 10 ? 0 : 1), 2, y + 4);
  }
  g.fillText('-' + Math.round(t1 - t0) + ' s', 36, h - 3);
  g.fillText('now', w - 26, h - 3);
}
function line(g, pts, key, t0, t1, top, w, h, colour) {
  g.strokeStyle = colour; g.lineWidth = 1.6; g.beginPath();
  let n = 0, pen = false;
  for (const p of pts) {
    const v = p[key];
    if (v === null || v === undefined) { pen = false; continue; }
    const x = 34 + (w - 38) * (p.t - t0) / Math.max(1, t1 - t0), y = 4 + (h - 18) * (1 - Math.min(v, top) / top);
    if (pen) g.lineTo(x, y); else g.moveTo(x, y);
    pen = true; n++;
  }
  g.stroke();
  return n;
}
function niceTop(v) { const s = [1, 2, 5]; let m = 1; for (;;) { for (const k of s) if (k * m >= v) return k * m; m *= 10; } }
function draw(hist) {
  const pts = hist.points;
  const t1 = pts.length ? pts[pts.length - 1].t : 0, t0 = Math.max(pts.length ? pts[0].t : 0, t1 - hist.window_s);
  for (const el of document.querySelectorAll('#fps-plot .span')) el.textContent = Math.max(0, Math.round((t1 - t0) / 60 * 10) / 10) + ' min';
  let [g, w, h] = canvas2d('fps-plot');
  const fpsTop = niceTop(Math.max(1, ...pts.map(p => p.fps)) * 1.1);
  axes(g, w, h, fpsTop, t0, t1);
  charts.fps.points = line(g, pts, 'fps', t0, t1, fpsTop, w, h, '#4c8');
  charts.fps.top = fpsTop;
  [g, w, h] = canvas2d('latency-plot');
  const latTop = niceTop(Math.max(1, ...pts.map(p => p.latency_p99 || 0)) * 1.1);
  axes(g, w, h, latTop, t0, t1);
  charts.latency.points = line(g, pts, 'latency_p50', t0, t1, latTop, w, h, '#6cf');
  charts.latency.p99_points = line(g, pts, 'latency_p99', t0, t1, latTop, w, h, '#f96');
  charts.latency.top = latTop;
  [g, w, h] = canvas2d('classes-plot');
  let n = 0;
  const step = (w - 38) / Math.max(1, t1 - t0);
  for (const p of pts) {
    if (!p.label) continue;
    g.fillStyle = colourOf(p.label);
    g.fillRect(34 + (w - 38) * (p.t - t0) / Math.max(1, t1 - t0) - step, 4, Math.max(1, step + 0.5), h - 12);
    n++;
  }
  charts.classes.points = n;
  charts.classes.labels = hist.classes.map(([label]) => label);
  const legend = document.getElementById('class-legend');
  legend.replaceChildren(...hist.classes.slice(0, 8).map(([label, count]) => {
    const s = document.createElement('span'); const i = document.createElement('i');
    i.style.background = colourOf(label); s.append(i, label + ' ' + count + ' s'); return s;
  }));
  charts.updates++;
}
async function history() {
  if (refused) return;
  try {
    const r = await fetch(HISTORY, {cache: 'no-store'});
    if (refusedWith(r.status)) return;
    if (r.ok) draw(await r.json());
  } catch (e) { /* the header says when the server is unreachable */ }
}
timers.push(setInterval(history, 1000)); history();
window.addEventListener('resize', history);
</script>
</body></html>
"""


def render_page(views: list[str], view: str, source: str, camera: str | None = None,
                cameras: list[str] | tuple = ()) -> bytes:
    """camera: None for the default camera's page at / (plain URLs), else that camera's (/cameras/NAME/);
    cameras: every camera's name, linked in the header when there are several."""
    from edge_saliency.pipeline.render import VIEW_HELP, VIEWS

    buttons = "".join(
        f'<button type="button" data-view="{html.escape(v)}" title="{html.escape(VIEW_HELP.get(v, ""))}">'
        f'<kbd>{VIEWS.index(v) + 1 if v in VIEWS else ""}</kbd>{html.escape(v)}</button>' for v in views)
    if camera is None:
        stream, latest, history, frame = "stream.mjpg", "api/latest", "api/history", "api/frame.jpg"
    else:
        stream, latest, history, frame = (f"/cameras/{camera}/stream.mjpg", f"/api/cameras/{camera}/latest",
                                          f"/api/cameras/{camera}/history", f"/api/cameras/{camera}/frame.jpg")
    nav = ""
    if len(cameras) > 1:
        current = camera or cameras[0]
        nav = "<nav>" + "".join(f'<a href="/cameras/{html.escape(c)}/"{" class=on" if c == current else ""}>'
                                f'{html.escape(c)}</a>' for c in cameras) + "</nav>"
    page = (PAGE.replace("__BUTTONS__", buttons).replace("__SOURCE__", html.escape(source))
            .replace("__CAMERAS__", nav).replace("__STREAM__", html.escape(stream)).replace("__LATEST__", html.escape(latest))
            .replace("__HISTORY__", html.escape(history)).replace("__FRAME__", html.escape(frame))
            .replace("__STREAM_JSON__", json.dumps(stream)).replace("__LATEST_JSON__", json.dumps(latest))
            .replace("__HISTORY_JSON__", json.dumps(history)).replace("__FRAME_JSON__", json.dumps(frame))
            .replace("__VIEWS__", json.dumps(views)).replace("__ALL_VIEWS__", json.dumps(list(VIEWS)))
            .replace("__HELP__", json.dumps(VIEW_HELP)).replace("__VIEW_JSON__", json.dumps(view))
            .replace("__VIEW__", html.escape(view)))
    return page.encode("utf-8")
