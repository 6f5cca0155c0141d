"""``streamer batch`` throughput over local processes and a Ray cluster of 1 and 3
nodes, the per-file overhead of a Ray task, and the shared budget's accuracy.

12 synthetic clips (320x240, 30 fps, 3 s: 90 frames each) against ``streamer serve``
(shapes/1) in its own process, JSON lines out. In the same run: ``--workers 6`` local
processes (the baseline), Ray with one node of 3 CPUs, Ray with three nodes of 1 CPU
each (``ray.cluster_utils.Cluster`` on 127.0.0.1); a recorded file takes 0.5 CPU, so 6
files run at once in every case (on a machine of 2 cores). Then the budget: 6 files sharing a budget of
10 requests/s over the 3 nodes, against a server that would allow 12/s.

    python scripts/bench_cluster.py [--files 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray reads it on import

import ray
from ray.cluster_utils import Cluster

from streamer.batch import FileResult, plan, run_batch
from streamer.server.runner import ServerProcess
from streamer.synth import Scene, write_video


def _children_cpu() -> float:
    """The machine's busy CPU seconds (/proc/stat): Ray's workers are not this process's
    children, so rusage would miss them; the bench should run on a quiet machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _clips(folder: Path, count: int, seconds: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        path = folder / f"clip{i:02d}.mp4"
        write_video(path, Scene(width=320, height=240, fps=30, objects=3, seed=i), seconds=seconds)
        clips.append(path)
    return clips


Run = tuple[float, float, list[FileResult]]  # wall s, CPU s, each file's result


def _batch(clips: list[Path], out: Path, settings: dict[str, object], **how: Any) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results: list[FileResult] = []
    cap = settings.get("rate_limit")
    jobs = plan(
        clips,
        {**settings, "jsonl": str(out / "{stem}.jsonl")},
        budget_cap=float(cap) if isinstance(cap, float) else None,
    )
    cpu, started = _children_cpu(), time.monotonic()
    code = run_batch(jobs, say=lambda line: None, on_result=results.append, **how)
    elapsed = time.monotonic() - started
    assert code == 0, [r.error for r in results if r.error]
    return elapsed, _children_cpu() - cpu, results


def _on_cluster(nodes: int, cpus: float, work: Callable[[str], Run]) -> Run:
    """``work(address)`` with a fresh cluster of ``nodes`` on 127.0.0.1 as the driver."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, namespace="streamer")
        return work(cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
        folder = Path(tmp)
        clips = _clips(folder / "clips", args.files, 3)
        frames = args.files * 90
        settings: dict[str, object] = {"api_url": server.url, "model": "shapes/1"}
        rows = []
        elapsed, cpu, results = _batch(clips, folder / "out", settings, workers=6)
        rows.append(("local processes, --workers 6 (baseline)", elapsed, cpu, results))
        for nodes, cpus in ((1, 3.0), (3, 1.0)):

            def work(address: str) -> Run:
                return _batch(clips, folder / "out", settings, workers=1, ray_address=address)

            elapsed, cpu, results = _on_cluster(nodes, cpus, work)
            rows.append((f"Ray, {nodes} node(s) on 127.0.0.1", elapsed, cpu, results))
        base = rows[0][1]
        print(f"\n### streamer batch: {args.files} files x 90 frames (320x240), shapes/1\n")
        print(
            "| how | wall s | files/s | frames/s | CPU s (machine, busy) | per file in worker, median s | ratio to baseline |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, elapsed, cpu, results in rows:
            inside = sorted(r.seconds for r in results)[len(results) // 2]
            print(f"| {name} | {elapsed:.1f} | {args.files / elapsed:.2f} | {frames / elapsed:.0f} "
                  f"| {cpu:.1f} | {inside:.2f} | {elapsed / base:.2f} |")  # fmt: skip
        # the budget over three nodes
        limited = ServerProcess("--rate-limit", "12")
        with limited:
            budget_clips = clips[:6]

            def budget(address: str) -> Run:
                return _batch(budget_clips, folder / "out", {"api_url": limited.url, "model": "shapes/1",
                              "rate_limit": 10.0}, workers=1, ray_address=address)  # fmt: skip

            _, _, results = _on_cluster(3, 1.0, budget)
        sent = sum(r.sent for r in results)
        first = min(r.started_at for r in results)
        last = max(r.started_at + r.seconds for r in results)
        print("\n### One budget of 10 requests/s, 6 files on 3 nodes\n")
        print("| requests | span s (first file start to last end) | rate /s | 429s |")
        print("|---:|---:|---:|---:|")
        print(f"| {sent} | {last - first:.1f} | {sent / (last - first):.2f} "
              f"| {sum(r.rate_limited for r in results)} |")  # fmt: skip


if __name__ == "__main__":
    main()
