"""What the web view's previews cost, and how fresh they are.

8 live 720p synthetic cameras (25 fps, 5 inference fps each) against ``streamer serve
--latency-ms 200`` in its own process, the ``--web`` server in this one. First nobody
watches (the baseline: the cameras alone), then 4 MJPEG viewers per camera (32 in all,
each a thread reading the stream as fast as it comes) for the same time. Reported: the
process's CPU in both phases (the viewers run in a child process, so their own reading
is not counted) and the difference per viewer and per camera, JPEGs delivered and
encoded, and each part's capture age when it left the server (in each JPEG's
comment: capture to bytes out), p50/p95.

    python scripts/bench_preview.py [--cameras 8] [--viewers 4] [--seconds 10] [--repeats 3]
        [--source synthetic:?size=1280x720&fps=25 | a 720p file, played live]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import socket
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


def slow_viewer(url: str, stop: threading.Event) -> None:
    """Read the stream one byte a second, as a tab left in the background might."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        while not stop.wait(1.0):
            sock.recv(1)


def watch_all(urls: list[str], seconds: float, out: Any) -> None:
    """In a child process: every viewer (and one slow reader of the first camera) for
    ``seconds``, then the ages (ms) to ``out``."""
    stop, lock = threading.Event(), threading.Lock()
    ages: list[float] = []
    threads = [
        threading.Thread(target=viewer, args=(url, stop, ages, lock), daemon=True) for url in urls
    ]
    threads.append(threading.Thread(target=slow_viewer, args=(urls[0], stop), daemon=True))
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
    parser.add_argument("--repeats", type=int, default=3, help="pairs of phases")
    parser.add_argument(
        "--source",
        default="synthetic:?size=1280x720&fps=25",
        help="each camera's source; a 720p video file plays live as a decoded camera would "
        "(long enough for the run: 3 s + repeats x 2 x seconds)",
    )
    args = parser.parse_args()
    tune_threads()
    alone: list[float] = []
    watched: list[float] = []
    delivered: list[float] = []
    made = 0
    phases: dict[str, list[tuple[float, float, float]]] = {"nobody watching": [], "watched": []}
    with ServerProcess("--latency-ms", "200") as server:
        base = {"api_url": server.url, "model": "shapes/1", "mode": "live", "max_fps": 5}
        with Fleet(base) as fleet:
            control = start_control_server(fleet, "127.0.0.1:0", None)
            try:
                names = [f"cam{i}" for i in range(args.cameras)]
                for name in names:
                    fleet.add(name, args.source, mode="live")
                time.sleep(3)  # every camera streaming and answered
                previews = {name: fleet.camera(name).preview for name in names}
                urls = [
                    f"{control.url}/camera/{name}/preview.mjpg"
                    for name in names
                    for _ in range(args.viewers)
                ]
                for _ in range(args.repeats):
                    cpu, started, ok = _cpu(), time.monotonic(), _ok(fleet)
                    time.sleep(args.seconds)
                    alone.append((_cpu() - cpu) / (time.monotonic() - started))
                    phases["nobody watching"].append(_phase(fleet, ok, started))
                    out: Any = multiprocessing.Queue()
                    child = multiprocessing.Process(
                        target=watch_all, args=(urls, args.seconds, out), daemon=True
                    )
                    child.start()
                    assert out.get(timeout=60) == "measuring"
                    encoded = {name: p.encoded if p else 0 for name, p in previews.items()}
                    cpu, started, ok = _cpu(), time.monotonic(), _ok(fleet)
                    delivered += out.get(timeout=args.seconds + 60)
                    watched.append((_cpu() - cpu) / (time.monotonic() - started))
                    phases["watched"].append(_phase(fleet, ok, started))
                    made += sum((p.encoded if p else 0) - encoded[n] for n, p in previews.items())
                    child.join(10)
                    wait_gone(previews)
            finally:
                control.close()
                fleet.stop()
    report(args, alone, watched, delivered, made)
    print("\n| phase (medians) | inference fps, all cameras | cam0 (+1 slow reader "
          "when watched) | result age p50, median camera |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for phase, values in phases.items():
        total, first, age = (statistics.median(v) for v in zip(*values, strict=True))
        print(f"| {phase} | {total:.1f} | {first:.2f} | {age:.0f} ms |")


def wait_gone(previews: dict[str, Any]) -> None:
    """Until the server has seen every viewer of the last phase leave."""
    deadline = time.monotonic() + 30
    while any(p.viewers for p in previews.values() if p) and time.monotonic() < deadline:
        time.sleep(0.1)


def _ok(fleet: Fleet) -> dict[str, int]:
    return {name: s.ok for name, s in fleet.status().cameras.items()}


def _phase(fleet: Fleet, before: dict[str, int], started: float) -> tuple[float, float, float]:
    """Inference fps of all cameras and of cam0 since ``started``; median result age."""
    status = fleet.status().cameras
    elapsed = time.monotonic() - started
    fps = {name: (s.ok - before.get(name, 0)) / elapsed for name, s in status.items()}
    ages = [s.result_age_p50_ms for s in status.values() if s.result_age_p50_ms is not None]
    return sum(fps.values()), fps.get("cam0", 0.0), statistics.median(ages) if ages else 0.0


def report(
    args: argparse.Namespace,
    alone: list[float],
    watched: list[float],
    delivered: list[float],
    made: int,
) -> None:
    viewers = args.cameras * args.viewers
    extras = sorted(w - a for w, a in zip(watched, alone, strict=True))
    extra = statistics.median(extras)
    ordered = sorted(delivered)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")
    print(f"\n### Previews: {args.cameras} live 720p cameras x {args.viewers} viewers, "
          f"{args.repeats} x {args.seconds:g} s each phase, medians\n")  # fmt: skip
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| process CPU, nobody watching (baseline) | {statistics.median(alone):.3f} cores | |")
    print(f"| process CPU, {viewers} viewers | {statistics.median(watched):.3f} cores | |")
    print(f"| the previews' cost (each pair: {', '.join(f'{e:.3f}' for e in extras)}) | "
          f"{extra:.3f} cores ({extra * 100:.0f} % of a core) | <= 15 % |")  # fmt: skip
    print(f"| per camera / per viewer | {extra / args.cameras * 1000:.1f} / "
          f"{extra / viewers * 1000:.1f} ms per s | |")  # fmt: skip
    print(f"| JPEGs delivered / encoded | {len(delivered)} / {made} | encoded = frames shown |")
    if delivered:
        print(f"| capture to bytes out, p50 / p95 | {statistics.median(delivered):.0f} / "
              f"{p95:.0f} ms | p95 <= 300 ms |")  # fmt: skip


if __name__ == "__main__":
    main()
