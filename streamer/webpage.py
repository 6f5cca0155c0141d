"""The web view's pages: every camera live with its figures (``/``), one camera large
(``/camera/<name>``). Plain HTML and a few lines of script: previews are MJPEG
``<img>``s, the figures come from ``/api/cameras`` and ``/api/stats`` once a second.
Camera names are escaped; sources are never shown unmasked (the API masks them).
"""

from __future__ import annotations

import html

__all__ = ["camera_page", "index_page", "login_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}
h1{font-size:1.2rem}.cams{display:flex;flex-wrap:wrap;gap:1rem}
.cam{background:#222;padding:.5rem;border-radius:6px;width:660px}
.cam img{width:640px;background:#000;display:block;min-height:120px}
.one img{width:100%;max-width:1280px}
table{font-size:.85rem;border-collapse:collapse;margin-top:.4rem}
td{padding:.1rem .6rem .1rem 0}.state{font-weight:bold}
.streaming{color:#6d6}.connecting,.reconnecting,.paused{color:#fd6}.failed,.stopped{color:#f66}
.stale{color:#f66}a{color:#8cf}
"""

_SCRIPT = """
const fmt = (v, unit) => v === null || v === undefined ? "-" : v.toFixed(1) + unit;
async function refresh() {
  try {
    const [cams, stats] = await Promise.all([
      fetch("/api/cameras").then(r => r.json()), fetch("/api/stats").then(r => r.json())]);
    for (const cam of cams.cameras) {
      const box = document.getElementById("cam-" + cam.name);
      if (!box) {
        if (document.body.dataset.all) { location.reload(); return; }  // a new camera
        continue;  // one camera's page: the others are not on it
      }
      const s = stats.cameras[cam.name] || {};
      const skipped = Object.entries(s.skipped || {}).map(([k, v]) => k + " " + v).join(", ");
      const error = cam.last_error ? ": " + cam.last_error : "";
      box.querySelector(".state").textContent = cam.state + error;
      box.querySelector(".state").className = "state " + cam.state;
      const age = s.result_age_p95_ms;
      box.querySelector(".figures").innerHTML =
        "<tr><td>source</td><td>" + fmt(s.source_fps, " fps") + "</td><td>inference</td><td>"
        + fmt(s.inference_fps, " fps") + "</td></tr><tr><td>result age p50/p95</td><td>"
        + fmt(s.result_age_p50_ms, "") + " / <span class='" + (age > 2000 ? "stale" : "") + "'>"
        + fmt(age, " ms") + "</span></td><td>API p50/p95</td><td>" + fmt(s.latency_p50_ms, "")
        + " / " + fmt(s.latency_p95_ms, " ms") + "</td></tr><tr><td>429s</td><td>"
        + (s.rate_limited ?? "-") + "</td><td>reconnects</td><td>" + (s.reconnects ?? "-")
        + "</td></tr><tr><td>not sent</td><td colspan=3>" + (skipped || "-") + "</td></tr>";
    }
    const budgets = Object.entries(stats.budgets || {}).map(([host, b]) =>
      host + ": " + b.rate.toFixed(1) + " req/s, " + b.calls_per_minute + " calls/min, "
      + b.tokens + " token" + (b.tokens === 1 ? "" : "s") + " free, "
      + Object.values(b.waiting).reduce((n, w) => n + w, 0) + " waiting").join("; ");
    document.getElementById("budgets").textContent = budgets || "no shared budget";
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) { document.getElementById("updated").textContent = "the server does not answer"; }
}
setInterval(refresh, 1000); refresh();
"""


def _card(name: str, large: bool = False) -> str:
    safe = html.escape(name)
    link = "" if large else f' <a href="/camera/{safe}">open</a>'
    return (
        f'<div class="cam{" one" if large else ""}" id="cam-{safe}"><b>{safe}</b>{link} '
        f'<span class="state"></span><img src="/camera/{safe}/preview.mjpg" alt="{safe}">'
        '<table class="figures"></table></div>'
    )


def _page(title: str, body: str, *, every_camera: bool) -> str:
    data = " data-all='1'" if every_camera else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body{data}>{body}"
        "<p>budget: <span id='budgets'></span> · updated <span id='updated'></span></p>"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def index_page(names: list[str]) -> str:
    cards = "".join(_card(name) for name in names) or "<p>no cameras</p>"
    return _page("streamer", f"<h1>streamer</h1><div class='cams'>{cards}</div>", every_camera=True)


def camera_page(name: str) -> str:
    body = f"<h1><a href='/'>streamer</a> / {html.escape(name)}</h1>{_card(name, large=True)}"
    return _page(f"streamer {name}", body, every_camera=False)


def login_page(failed: bool = False) -> str:
    note = "<p class='stale'>wrong token</p>" if failed else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>streamer</title>"
        f"<style>{_STYLE}</style></head><body><h1>streamer</h1>{note}"
        "<form method='post' action='/login'><input type='password' name='token' "
        "placeholder='token' autofocus> <button>enter</button></form></body></html>"
    )
