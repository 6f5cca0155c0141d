"""What the web view's previews cost, and how fresh they are.

8 live 720p synthetic cameras (25 fps, 5 inference fps each) against ``streamer serve
--latency-ms 200`` in its own process, the ``--web`` server in this one. First nobody
watches (the baseline: the cameras alone), then 4 MJPEG viewers per camera (32 in all,
each a thread reading the stream as fast as it comes) for the same time. Reported: the
process's CPU in both phases (the viewers run in a child process, so their own reading
is not counted) and the difference per viewer and per camera, JPEGs delivered and
encoded, and each part's capture age when it left the server (in each JPEG's
comment: capture to bytes out), p50/p95.

    python scripts/bench_preview.py [--cameras 8] [--viewers 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import threading
import time
from typing import Any

import httpx

from streamer.fleet import Fleet
from streamer.run import tune_threads
from streamer.server.runner import ServerProcess
from streamer.sinks.preview import AGE_COMMENT, MjpegReader, jpeg_comment
from streamer.web import start_control_server


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def viewer(url: str, stop: threading.Event, ages: list[float], lock: threading.Lock) -> None:
    """Read an MJPEG stream until ``stop``, keeping each part's capture age."""
    reader = MjpegReader()
    with httpx.stream("GET", url, timeout=30) as answer:
        for chunk in answer.iter_bytes():
            for jpeg in reader.feed(chunk):
                age = float((jpeg_comment(jpeg) or "").removeprefix(AGE_COMMENT))
                with lock:
                    ages.append(age)
            if stop.is_set():
                return


def watch_all(urls: list[str], seconds: float, out: Any) -> None:
    """In a child process: every viewer for ``seconds``, then the ages (ms) to ``out``."""
    stop, lock = threading.Event(), threading.Lock()
    ages: list[float] = []
    threads = [
        threading.Thread(target=viewer, args=(url, stop, ages, lock), daemon=True) for url in urls
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)  # every viewer connected
    with lock:
        ages.clear()
    out.put("measuring")
    time.sleep(seconds)
    with lock:
        out.put(list(ages))
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--viewers", type=int, default=4, help="per camera")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    tune_threads()
    with ServerProcess("--latency-ms", "200") as server:
        base = {"api_url": server.url, "model": "shapes/1", "mode": "live", "max_fps": 5}
        with Fleet(base) as fleet:
            control = start_control_server(fleet, "127.0.0.1:0", None)
            try:
                names = [f"cam{i}" for i in range(args.cameras)]
                for name in names:
                    fleet.add(name, "synthetic:?size=1280x720&fps=25")
                time.sleep(3)  # every camera streaming and answered
                cpu, started = _cpu(), time.monotonic()
                time.sleep(args.seconds)
                alone = (_cpu() - cpu) / (time.monotonic() - started)
                previews = {name: fleet.camera(name).preview for name in names}
                urls = [
                    f"{control.url}/camera/{name}/preview.mjpg"
                    for name in names
                    for _ in range(args.viewers)
                ]
                out: Any = multiprocessing.Queue()
                child = multiprocessing.Process(
                    target=watch_all, args=(urls, args.seconds, out), daemon=True
                )
                child.start()
                assert out.get(timeout=60) == "measuring"
                encoded = {name: p.encoded if p else 0 for name, p in previews.items()}
                cpu, started = _cpu(), time.monotonic()
                delivered: list[float] = out.get(timeout=args.seconds + 60)
                watched = (_cpu() - cpu) / (time.monotonic() - started)
                made = sum((p.encoded if p else 0) - encoded[n] for n, p in previews.items())
                child.join(10)
            finally:
                control.close()
                fleet.stop()
    report(args, alone, watched, delivered, made)


def report(
    args: argparse.Namespace, alone: float, watched: float, delivered: list[float], made: int
) -> None:
    viewers = args.cameras * args.viewers
    extra = watched - alone
    ordered = sorted(delivered)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")
    print(f"\n### Previews: {args.cameras} live 720p cameras x {args.viewers} viewers, "
          f"{args.seconds:g} s each phase\n")  # fmt: skip
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| process CPU, nobody watching (baseline) | {alone:.3f} cores | |")
    print(f"| process CPU, {viewers} viewers | {watched:.3f} cores | |")
    print(f"| the previews' cost | {extra:.3f} cores ({extra * 100:.0f} % of a core) | <= 15 % |")
    print(f"| per camera / per viewer | {extra / args.cameras * 1000:.1f} / "
          f"{extra / viewers * 1000:.1f} ms per s | |")  # fmt: skip
    print(f"| JPEGs delivered / encoded | {len(delivered)} / {made} | encoded = frames shown |")
    if delivered:
        print(f"| capture to bytes out, p50 / p95 | {statistics.median(delivered):.0f} / "
              f"{p95:.0f} ms | p95 <= 300 ms |")  # fmt: skip


if __name__ == "__main__":
    main()
