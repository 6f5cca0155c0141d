"""Preview latency to the browser's paint: capture of a frame to Chromium showing it.

8 live 720p synthetic cameras (25 fps, 5 inference fps each) against ``streamer serve
--latency-ms 200``, the ``--web`` server in this process. One headless Chromium
(Debian's, through Playwright) shows ``/``, every camera's MJPEG preview; a script in
the page looks at each ``<img>`` on every animation frame (a 32x24 grey thumbnail
drawn on a canvas) and notes the wall-clock time each time it changes. Three more
viewers per camera read the MJPEG stream over HTTP in a child process, so each camera
has 4 viewers as in ``bench_preview.py``. This process keeps every JPEG the previews
encode with its frame's capture time; afterwards each painted thumbnail is matched to
the encoded frame whose thumbnail is nearest (of those encoded before the paint), and
the latency is the paint time minus that frame's capture time (both on this
machine's clock; a paint is seen on the animation frame after it, so +0-17 ms).

    python scripts/bench_paint.py [--cameras 8] [--viewers 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import threading
import time
from typing import Any

import cv2
import numpy as np
from bench_preview import watch_all

from streamer.fleet import Fleet
from streamer.run import tune_threads
from streamer.server.runner import ServerProcess
from streamer.sinks.preview import Preview
from streamer.web import start_control_server

THUMB = (32, 24)
# every animation frame: each preview's thumbnail; a changed one is noted with its time
WATCH_JS = """
() => {
  window.painted = [];
  const canvas = document.createElement("canvas");
  canvas.width = WIDTH; canvas.height = HEIGHT;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  const last = {};
  function look() {
    const now = performance.timeOrigin + performance.now();
    for (const img of document.querySelectorAll("img")) {
      if (!img.complete || img.naturalWidth === 0) continue;
      context.drawImage(img, 0, 0, canvas.width, canvas.height);
      const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const grey = [];
      for (let i = 0; i < rgba.length; i += 4)
        grey.push(Math.round((rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3));
      const key = grey.join(",");
      const camera = img.closest("[id^=cam-]").id.slice(4);
      if (last[camera] !== key) {
        last[camera] = key;
        window.painted.push([camera, now, grey]);
      }
    }
    requestAnimationFrame(look);
  }
  requestAnimationFrame(look);
}
""".replace("WIDTH", str(THUMB[0])).replace("HEIGHT", str(THUMB[1]))


def keep_encodes(
    previews: dict[str, Preview], stop: threading.Event, out: list[tuple[str, float, bytes]]
) -> None:
    """Every JPEG each preview makes, with its frame's capture time (wall clock, s)."""
    offset = time.time() - time.monotonic()
    seen = dict.fromkeys(previews, -1)
    while not stop.is_set():
        for name, preview in previews.items():
            frame = preview.newer_than(seen[name])
            if frame is not None:
                seen[name] = frame.sequence
                out.append((name, frame.captured_at + offset, frame.jpeg))
        time.sleep(0.002)


def thumbnail(jpeg: bytes) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    small = cv2.resize(image, THUMB, interpolation=cv2.INTER_AREA)
    grey: np.ndarray[Any, Any] = small.mean(axis=2).ravel()
    return grey


def match(
    painted: list[Any], encodes: list[tuple[str, float, bytes]]
) -> tuple[list[float], list[float]]:
    """Each paint's latency (ms) and how much nearer its frame was than the next best."""
    frames: dict[str, list[tuple[float, np.ndarray[Any, Any]]]] = {}
    for name, captured, jpeg in encodes:
        frames.setdefault(name, []).append((captured, thumbnail(jpeg)))
    latencies, margins = [], []
    for camera, at_ms, grey in painted:
        candidates = [(c, t) for c, t in frames.get(camera, []) if c * 1000 <= at_ms]
        if len(candidates) < 2:
            continue
        shown = np.asarray(grey, dtype=float)
        distances = sorted((float(np.abs(t - shown).mean()), c) for c, t in candidates[-20:])
        latencies.append(at_ms - distances[0][1] * 1000)
        margins.append(distances[1][0] - distances[0][0])
    return latencies, margins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--viewers", type=int, default=4, help="per camera, the browser's included")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("bench_paint: Debian's chromium is not installed")
    tune_threads()
    encodes: list[tuple[str, float, bytes]] = []
    with ServerProcess("--latency-ms", "200") as server:
        base = {"api_url": server.url, "model": "shapes/1", "mode": "live", "max_fps": 5}
        with Fleet(base) as fleet, sync_playwright() as playwright:
            control = start_control_server(fleet, "127.0.0.1:0", None)
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            stop = threading.Event()
            try:
                names = [f"cam{i}" for i in range(args.cameras)]
                for name in names:
                    fleet.add(name, "synthetic:?size=1280x720&fps=25")
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.goto(f"{control.url}/", wait_until="domcontentloaded")  # MJPEG never loads
                urls = [
                    f"{control.url}/camera/{name}/preview.mjpg"
                    for name in names
                    for _ in range(args.viewers - 1)
                ]
                out: Any = multiprocessing.Queue()
                child = multiprocessing.Process(
                    target=watch_all, args=(urls, args.seconds, out), daemon=True
                )
                child.start()
                assert out.get(timeout=60) == "measuring"
                previews = {name: fleet.camera(name).preview for name in names}
                keeper = threading.Thread(
                    target=keep_encodes,
                    args=({n: p for n, p in previews.items() if p}, stop, encodes),
                    name="bench-encodes",
                )
                keeper.start()
                page.evaluate(WATCH_JS)
                delivered: list[float] = out.get(timeout=args.seconds + 60)
                painted = page.evaluate("window.painted")
                stop.set()
                keeper.join(10)
                child.join(10)
            finally:
                stop.set()
                browser.close()
                control.close()
                fleet.stop()
    latencies, margins = match(painted, encodes)
    report(args, latencies, margins, delivered, len(encodes))


def report(
    args: argparse.Namespace,
    latencies: list[float],
    margins: list[float],
    delivered: list[float],
    encoded: int,
) -> None:
    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    print(f"\n### Preview latency to the paint: {args.cameras} live 720p cameras x "
          f"{args.viewers} viewers (1 in Chromium), {args.seconds:g} s\n")  # fmt: skip
    print("| measure | p50 | p95 | frames |")
    print("|---|---:|---:|---:|")
    print(f"| capture to bytes out (HTTP viewers) | {p(delivered, 0.5):.0f} ms "
          f"| {p(delivered, 0.95):.0f} ms | {len(delivered)} |")  # fmt: skip
    print(f"| capture to Chromium's paint | {p(latencies, 0.5):.0f} ms "
          f"| {p(latencies, 0.95):.0f} ms | {len(latencies)} of {encoded} encoded |")  # fmt: skip
    if margins:
        print(f"\nmatching: nearest frame's distance margin over the next, median "
              f"{statistics.median(margins):.1f} grey levels (0: ambiguous)")  # fmt: skip


if __name__ == "__main__":
    main()
