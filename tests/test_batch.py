"""``streamer batch`` over local worker processes: real encoded files, a real local
inference server, one corrupt file; reruns skip what is done; one budget shared by
worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.batch import FileResult, expand, plan, run_batch
from streamer.errors import ConfigError
from streamer.server import ServerThread
from streamer.server.faults import FaultConfig
from tests.helpers import STREAMER, ServerFactory, records, run_cli, wait_for


def _files(make_clip: Callable[..., Path], folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    clips = []
    for i in range(count):
        clip = make_clip(1, width=160, height=120, fps=10, seed=i)
        target = folder / f"clip{i}.mp4"
        shutil.copyfile(clip, target)  # the clip is cached for other tests
        clips.append(target)
    return clips


def test_batch_processes_each_file_once_and_a_rerun_redoes_only_what_is_missing(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clips = _files(make_clip, tmp_path / "archive", 3)
    (tmp_path / "archive" / "broken.mp4").write_bytes(clips[0].read_bytes()[:3000])
    out = tmp_path / "out"
    args = [
        "batch", str(tmp_path / "archive" / "*.mp4"),
        "--jsonl", str(out / "{stem}.jsonl"), "--output", str(out / "{stem}.mp4"),
        "--api-url", server.url, "--model", "shapes/1", "--workers", "2",
    ]  # fmt: skip
    first = run_cli(*args, timeout=240)
    assert first.returncode == 3, first.stderr  # the corrupt file: a bad source
    assert "batch: error:" in first.stderr
    assert "broken.mp4" in first.stderr
    assert "Traceback" not in first.stderr
    for clip in clips:
        lines = records(out / f"{clip.stem}.jsonl")
        assert [r["frame_index"] for r in lines] == list(range(10))  # every frame, in order
        assert {r["camera"] for r in lines} == {clip.stem}
        assert (out / f"{clip.stem}.mp4").stat().st_size > 0
    assert not (out / "broken.jsonl").exists()
    made = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a rerun: the finished files are skipped, the broken one tried again
    second = run_cli(*args, timeout=240)
    assert second.returncode == 3
    assert "(3 done before, 1 failed)" in second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == made
    # an output gone (a file half done): that file, and only it, is done again
    (out / "clip1.mp4").unlink()
    third = run_cli(*args, timeout=240)
    assert "(2 done before, 1 failed)" in third.stderr
    assert (out / "clip1.mp4").exists()
    assert (out / "clip0.jsonl").stat().st_mtime_ns == made["clip0.jsonl"]
    assert (out / "clip1.jsonl").stat().st_mtime_ns != made["clip1.jsonl"]


def test_worker_processes_share_one_budget(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    """Three files at once, each able to send 10 requests a second, against a server
    that answers 429 past 6/s: one budget of 4/s across the three worker processes
    means no 429 (each alone at 4/s would make it 12/s). Each process paces its own
    share, and one that woke late catches up half a slot, so the server may see a few
    requests above the rate in a short window: its bucket holds 5 (a budget at exactly
    an API's limit, with a small bucket, would meet 429s by chance on a busy machine)."""
    limited = start_server(FaultConfig(rate_limit=6, burst=5))
    clips = _files(make_clip, tmp_path / "archive", 3)
    settings = {"api_url": limited.url, "model": "shapes/1", "rate_limit": 4.0, "every": 1}
    settings["jsonl"] = str(tmp_path / "out" / "{stem}.jsonl")
    (tmp_path / "out").mkdir()
    jobs = plan(clips, settings, budget_cap=4.0)
    results: list[FileResult] = []
    code = run_batch(jobs, workers=3, say=lambda line: None, on_result=results.append)
    assert code == 0, results
    assert len(results) == 3
    assert sum(r.sent for r in results) == 30
    assert sum(r.rate_limited for r in results) == 0, results
    # in several processes (three unless one started slower than a whole file took)
    assert len({r.worker for r in results}) >= 2


def test_batch_refuses_bad_plans_in_one_line(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    other = tmp_path / "sub" / "a.mp4"
    other.parent.mkdir()
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match="would hold every file's output"):
        plan([clip, other], {"jsonl": str(tmp_path / "out.jsonl")})
    with pytest.raises(ConfigError, match="would both write"):
        plan([clip, other], {"jsonl": str(tmp_path / "out" / "{stem}.jsonl")})
    with pytest.raises(ConfigError, match="writes nothing"):
        plan([clip], {})
    with pytest.raises(ConfigError, match="no file matches"):
        expand([str(tmp_path / "none" / "*.mp4")])
    done = run_cli("batch", str(tmp_path / "none" / "*.mp4"), "--jsonl", "x/{stem}.jsonl")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("streamer: error: no file matches")


def test_ctrl_c_stops_a_batch_at_once_and_a_rerun_finishes_it(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it): the batch stops
    without waiting for the files in progress, says so, exits 130; those files have no
    output under their final names; a rerun does them."""
    clips = _files(make_clip, tmp_path / "archive", 4)
    out = tmp_path / "out"
    args = [
        "batch", str(tmp_path / "archive" / "*.mp4"), "--jsonl", str(out / "{stem}.jsonl"),
        "--api-url", server.url, "--model", "shapes/1", "--workers", "2", "--rate-limit", "1",
    ]  # fmt: skip
    process = subprocess.Popen(
        [*STREAMER, *args], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for(lambda: any(out.glob(".*.streamer-tmp.jsonl")), what="files in progress")
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "batch: interrupted:" in stderr
    assert "Traceback" not in stderr
    finished = {p.stem for p in out.glob("*.jsonl")}
    assert len(finished) < 4
    again = run_cli(*args[:-2], timeout=240)  # no rate limit now
    assert again.returncode == 0, again.stderr
    for clip in clips:
        assert [r["frame_index"] for r in records(out / f"{clip.stem}.jsonl")] == list(range(10))
