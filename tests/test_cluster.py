"""``streamer batch --ray`` on a real local Ray cluster: a head and two worker nodes,
all on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray bind loopback
instead of the machine's routable address, so no network namespace is needed), built
with ``ray.cluster_utils.Cluster``. Skipped with a reason where Ray is not installed
(``pip install -e '.[cluster]'``; ``.ci/run`` installs it).

Run them alone with ``pytest tests/test_cluster.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.batch import FileResult, plan, run_batch
from streamer.server import ServerThread
from streamer.server.faults import FaultConfig
from tests.helpers import STREAMER, ServerFactory, free_port, records, run_cli, wait_for
from tests.test_preview import read_jpegs

# read by Ray when it is imported: before the import
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Three nodes of one CPU each on 127.0.0.1; this test process is the driver."""
    made = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        for _ in range(2):
            made.add_node(num_cpus=1)
        made.wait_for_nodes()
        ray.init(address=made.address, log_to_driver=False, namespace="streamer")
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield made
    finally:
        ray.shutdown()
        made.shutdown()


def _files(make_clip: Callable[..., Path], folder: Path, count: int, seconds: float) -> list[Path]:
    folder.mkdir()
    clips = []
    for i in range(count):
        target = folder / f"clip{i:02d}.mp4"
        shutil.copyfile(make_clip(seconds, width=160, height=120, fps=10, seed=i % 4), target)
        clips.append(target)
    return clips


def test_a_batch_spreads_over_the_nodes_and_a_rerun_redoes_nothing(
    cluster: Any, make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clips = _files(make_clip, tmp_path / "archive", 11, 1)
    broken = tmp_path / "archive" / "clip99.mp4"
    broken.write_bytes(clips[0].read_bytes()[:2000])
    settings = {
        "api_url": server.url,
        "model": "shapes/1",
        "jsonl": str(tmp_path / "out" / "{stem}.jsonl"),
    }
    jobs = plan([*clips, broken], settings)
    results: list[FileResult] = []
    lines: list[str] = []
    code = run_batch(
        jobs, workers=1, ray_address=cluster.address, say=lines.append, on_result=results.append
    )
    assert code == 3  # the corrupt file
    failed = [r for r in results if r.code != 0]
    assert [Path(r.source).name for r in failed] == ["clip99.mp4"]
    assert "not a video file, or corrupt" in (failed[0].error or "")
    for clip in clips:
        frames = [r["frame_index"] for r in records(tmp_path / "out" / f"{clip.stem}.jsonl")]
        assert frames == list(range(10))  # every frame once, in order
    nodes = {r.worker.rsplit("node ", 1)[1] for r in results}
    assert len(nodes) >= 2, nodes  # spread over the cluster, not all on one node
    made = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    # the rerun: the 11 finished files are skipped; only the broken one is tried again
    again: list[FileResult] = []
    code = run_batch(
        plan([*clips, broken], settings),
        workers=1,
        ray_address=cluster.address,
        say=lines.append,
        on_result=again.append,
    )
    assert code == 3
    assert [Path(r.source).name for r in again] == ["clip99.mp4"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == made


def test_one_budget_across_the_nodes(
    cluster: Any, make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    """Six files at once on three nodes, one budget of 10 requests/s (a Ray actor)
    against a server that answers 429 past 12/s: no 429, and the rate used is the
    budget's."""
    limited = start_server(FaultConfig(rate_limit=12, burst=6))
    clips = _files(make_clip, tmp_path / "archive", 6, 6)
    settings = {
        "api_url": limited.url,
        "model": "shapes/1",
        "rate_limit": 10.0,
        "jsonl": str(tmp_path / "out" / "{stem}.jsonl"),
    }
    results: list[FileResult] = []
    code = run_batch(
        plan(clips, settings, budget_cap=10.0),
        workers=1,
        ray_address=cluster.address,
        say=lambda line: None,
        on_result=results.append,
    )
    assert code == 0, results
    assert sum(r.sent for r in results) == 6 * 60
    assert sum(r.rate_limited for r in results) == 0, results
    assert len({r.worker.rsplit("node ", 1)[1] for r in results}) == 3
    # never above the budget: 360 requests at 10/s take 36 s, whatever the nodes (within
    # 5 %; the span also holds each file's start, so it is the rate's upper bound)
    span = max(r.started_at + r.seconds for r in results) - min(r.started_at for r in results)
    assert 360 / span <= 10 * 1.05, span


def test_cameras_on_a_dead_node_come_back_elsewhere_and_never_run_twice(
    cluster: Any, server: ServerThread, tmp_path: Path
) -> None:
    """Six live cameras as actors spread over the nodes, one node added for them and
    then killed (its raylet and workers SIGKILLed): each camera it held is processing
    again on the surviving nodes within 30 s (Ray's own failure detection, defaults),
    no camera's records come from two incarnations in overlapping time, every JSON line
    is whole."""
    from streamer.cluster_cameras import ClusterCameras

    victim = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    victim_id = victim.node_id[:8]
    cameras = ClusterCameras(cluster.address, None, "test")
    settings = {
        "api_url": server.url, "model": "shapes/1", "mode": "live", "max_fps": 4,
        "ray_cpus": 0.2, "jsonl": str(tmp_path / "{camera}.jsonl"),
    }  # fmt: skip
    names = [f"cam{i}" for i in range(6)]
    try:
        for i, name in enumerate(names):
            cameras.want(name, f"synthetic:?size=160x120&fps=10&seed={i}", settings)
        cameras.reconcile()

        def answering() -> dict[str, dict[str, Any]]:
            found = cameras.statuses()
            return found if all(s.get("ok", 0) >= 3 for s in found.values()) else {}

        wait_for(answering, timeout=90, what="every camera answered")
        before = cameras.statuses()
        held = [n for n, s in before.items() if s["node"] == victim_id]
        assert held, f"no camera on the added node {victim_id}: {before}"
        killed_at = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)

        def back() -> bool:
            now = cameras.statuses()
            return all(
                now[n].get("incarnation") not in (None, before[n]["incarnation"])
                and now[n].get("node") != victim_id
                and now[n].get("ok", 0) >= 2
                for n in held
            )

        wait_for(back, timeout=60, what="the cameras back on other nodes")
        recovered_s = time.monotonic() - killed_at
        print(f"\ncameras back {recovered_s:.1f} s after their node died ({len(held)} of 6)")
        assert recovered_s < 30, recovered_s
    finally:
        cameras.close()
    for name in names:
        spans: dict[str, tuple[float, float]] = {}
        for path in tmp_path.glob(f"*{name}.*jsonl"):  # committed, and a killed one's temp
            for line in path.read_text().splitlines():
                record = json.loads(line)  # every line whole
                low, high = spans.get(record["run_id"], (record["wall_time"],) * 2)
                spans[record["run_id"]] = (
                    min(low, record["wall_time"]),
                    max(high, record["wall_time"]),
                )
        ordered = sorted(spans.values())
        assert len(ordered) == (2 if name in held else 1), (name, spans)
        for (_, end), (start, _) in itertools.pairwise(ordered):
            assert end < start, (name, ordered)  # one incarnation at a time


def test_run_ray_local_from_the_command_line(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    """``streamer run --ray local``: a Ray instance of its own on 127.0.0.1, a recorded
    file and a broken one as cameras; each incarnation's records under its own name."""
    clip = make_clip(1, width=160, height=120, fps=10)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:2000])
    config = tmp_path / "cameras.yaml"
    config.write_text(
        f"api_url: {server.url}\nmodel: shapes/1\njsonl: {tmp_path}/out/{{camera}}.jsonl\n"
        f"cameras:\n  - {{name: clip, source: {clip}}}\n  - {{name: broken, source: {broken}}}\n"
    )
    (tmp_path / "out").mkdir()
    done = run_cli("run", "--ray", "local", "--config", str(config), timeout=180)
    assert done.returncode == 3, done.stderr  # the broken file's camera
    assert "camera broken: not started; error: cannot open" in done.stderr
    assert "Traceback" not in done.stderr
    (written,) = (tmp_path / "out").glob("clip.*.jsonl")
    assert [r["frame_index"] for r in records(written)] == list(range(10))
    refused = run_cli("run", "--ray", "local", "--show", str(clip))
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("the cameras run on other machines, no window")


def test_sighup_changes_only_the_cameras_whose_settings_changed(
    server: ServerThread, tmp_path: Path
) -> None:
    """``streamer run --ray local --config``: SIGHUP re-reads the file; a camera
    removed there stops (its records committed), one added starts, one unchanged keeps
    its incarnation; a broken file changes nothing."""
    config = tmp_path / "cameras.yaml"
    out = tmp_path / "out"
    out.mkdir()
    head = (
        f"api_url: {server.url}\nmodel: shapes/1\nmode: live\nmax_fps: 3\n"
        f"jsonl: {out}/{{camera}}.jsonl\ncameras:\n"
    )
    live = "synthetic:?size=160x120&fps=10"
    config.write_text(
        head + f"  - {{name: stays, source: '{live}'}}\n  - {{name: goes, source: '{live}'}}\n"
    )
    process = subprocess.Popen(
        [*STREAMER, "run", "--ray", "local", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    reader = threading.Thread(
        target=lambda: said.extend(iter(process.stderr.readline, "")),  # type: ignore[union-attr]
        name="stderr-reader",
        daemon=True,
    )
    reader.start()
    try:

        def recording(name: str) -> Path | None:
            return next(out.glob(f".{name}.*.streamer-tmp.jsonl"), None)

        wait_for(lambda: recording("stays") and recording("goes"), timeout=120, what="both")
        stays = recording("stays")
        config.write_text(head + "  - {name: [broken\n")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("config not applied" in line for line in said), what="refused")
        config.write_text(
            head + f"  - {{name: stays, source: '{live}'}}\n  - {{name: comes, source: '{live}'}}\n"
        )
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: recording("comes"), timeout=120, what="the added camera")
        wait_for(lambda: next(out.glob("goes.*.jsonl"), None), timeout=60, what="goes committed")
        assert recording("stays") == stays  # the same incarnation, untouched
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(120)
        reader.join(10)
    stderr = "".join(said)
    assert process.returncode == 130, stderr
    assert "SIGHUP: config applied: 2 cameras" in stderr
    assert "Traceback" not in stderr
    committed = {p.name.split(".")[0] for p in out.glob("*.jsonl")}
    assert committed == {"stays", "goes", "comes"}
    for path in out.glob("*.jsonl"):
        assert records(path), path


def test_the_web_api_adds_removes_and_counts_cameras_on_the_cluster(
    server: ServerThread, tmp_path: Path
) -> None:
    """``--web`` with ``--ray local``: the same control API; a camera added over HTTP
    runs in an actor, its figures reach /api/cameras and /metrics on the head, the shared
    budget is shown per camera, a DELETE stops it and commits its records."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    live = "synthetic:?size=160x120&fps=10"
    process = subprocess.Popen(
        [*STREAMER, "run", "--ray", "local", "--web", f"127.0.0.1:{port}",
         "--api-url", server.url, "--model", "shapes/1", "--max-fps", "3", "--rate-limit", "8",
         "--jsonl", f"{tmp_path}/{{camera}}.jsonl", "--name", "door", live],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: _get(f"{url}/health"), timeout=120, what="the control API")
        added = httpx.post(f"{url}/api/cameras", json={"name": "aisle", "source": live}, timeout=30)
        assert added.status_code == 201, added.text
        taken = httpx.post(f"{url}/api/cameras", json={"name": "aisle", "source": live}, timeout=30)
        assert taken.status_code == 409

        def streaming() -> bool:
            cameras = httpx.get(f"{url}/api/cameras", timeout=10).json()["cameras"]
            return {c["name"]: c["state"] for c in cameras} == {
                "door": "streaming", "aisle": "streaming"
            } and all((c["inference_fps"] or 0) > 0 for c in cameras)  # fmt: skip

        wait_for(streaming, timeout=120, what="both cameras streaming with answers")
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
        }
        assert samples[("streamer_frames_sent_total", (("camera", "aisle"),))] > 0
        # the latency histograms the actors observed: per camera, and summed for the fleet
        age = samples[("streamer_result_age_seconds_count", (("camera", "aisle"),))]
        assert age > 0
        inf = samples[("streamer_result_age_seconds_bucket", (("camera", "aisle"), ("le", "+Inf")))]
        assert inf == age
        assert samples[("streamer_queue_wait_seconds_count", ())] >= age  # both cameras
        assert samples[("streamer_budget_rate", (("host", "cluster"),))] == 8
        shares = [v for (n, labels), v in samples.items() if n == "streamer_budget_share"]
        assert len(shares) == 2
        assert sum(shares) <= 8
        assert httpx.get(f"{url}/ready", timeout=10).json()["ready"] is True
        # a remote camera's preview: drawn in its actor for this viewer, served by the head
        ages: list[float] = []
        images = read_jpegs(f"{url}/camera/aisle/preview.mjpg", 4, ages)
        assert [image.shape for image in images] == [(120, 160, 3)] * 4
        assert all(0 <= age < 5000 for age in ages)
        assert float(np.abs(images[0].astype(int) - images[-1].astype(int)).mean()) > 0.5
        removed = httpx.delete(f"{url}/api/cameras/aisle", timeout=60)
        assert removed.status_code == 200
        assert "frames out" in removed.json()["summary"]
        assert next(tmp_path.glob("aisle.*.jsonl"))  # committed when it stopped
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr


def _get(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_mqtt_from_camera_actors(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    """``--mqtt`` with ``--ray local``: each camera's actor publishes its events on a
    connection of its own (availability on ``streamer/<camera>/available``), the head
    ``streamer/available`` and ``streamer/stats``; every event in the events file
    arrives."""
    from tests.test_mqtt import MOSQUITTO, Broker, Subscriber

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto)")
    broker = Broker(tmp_path)
    broker.start()
    subscriber = Subscriber(broker.port, "streamer/#", "test-cluster")
    try:
        wait_for(subscriber.subscribed.is_set, what="the subscription")
        clip = make_clip(3, width=320, height=240, fps=10)
        done = run_cli(
            "run", "--ray", "local", str(clip), "--name", "door", "--api-url", server.url,
            "--model", "shapes/1", "--events", str(tmp_path / "events.jsonl"),
            "--mqtt", f"mqtt://127.0.0.1:{broker.port}", timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (written,) = tmp_path.glob("events.*.jsonl")
        expected = {e["event_id"] for e in records(written)}
        assert expected
        wait_for(
            lambda: {e["event_id"] for e in subscriber.events()} >= expected,
            what="every event over MQTT",
        )
        wait_for(
            lambda: subscriber.latest().get("streamer/door/available") == "offline",
            what="the camera's availability",
        )
        latest = subscriber.latest()
        assert latest.get("streamer/available") == "offline"  # the head's, at its end
    finally:
        subscriber.close()
        broker.stop()


def test_six_cameras_on_three_nodes_share_one_budget_by_weight(
    cluster: Any, start_server: ServerFactory
) -> None:
    """Six live cameras (actors, two per node) wanting 60 requests/s in all, one budget
    of 10/s against ``streamer serve --rate-limit 10``: after a settling time, no 429,
    requests sent at most the budget (and near it), weight 2 cameras getting about twice
    a weight 1 camera's share (measured: 9.99/s, 1.25 and 2.50)."""
    from streamer.cluster import ActorLender
    from streamer.cluster_cameras import ClusterCameras

    limited = start_server(FaultConfig(rate_limit=10))
    cameras = ClusterCameras(cluster.address, 10.0, "budget")
    weights = {"w1a": 1, "w1b": 1, "w1c": 1, "w1d": 1, "w2a": 2, "w2b": 2}
    try:
        for i, (name, weight) in enumerate(weights.items()):
            cameras.want(
                name,
                f"synthetic:?size=160x120&fps=10&seed={i}",
                {"api_url": limited.url, "model": "shapes/1", "mode": "live",
                 "max_fps": 10, "rate_limit": 10.0, "weight": weight, "ray_cpus": 0.5},
            )  # fmt: skip
        cameras.reconcile()
        wait_for(
            lambda: all(s.get("ok", 0) >= 1 for s in cameras.statuses().values()),
            timeout=120,
            what="every camera answered",
        )

        def settled() -> bool:  # leases renew every third of a second
            shares = ActorLender(cameras.coordinator).status().shares
            mine = {h.rsplit("/", 1)[-1]: r for h, r in shares.items()}
            return all(abs(mine.get(n, 0) - 1.25 * w) < 0.01 for n, w in weights.items())

        wait_for(settled, timeout=60, what="the shares settled by weight")
        before = {n: s["pipeline"] for n, s in cameras.statuses().items()}
        started = time.monotonic()
        time.sleep(12)  # the measured window
        after = {n: s["pipeline"] for n, s in cameras.statuses().items()}
        elapsed = time.monotonic() - started
    finally:
        cameras.close()
    nodes = {cameras.results[n].get("node") for n in weights}
    assert len(nodes) == 3, nodes
    assert sum(a.rate_limited - before[n].rate_limited for n, a in after.items()) == 0
    got = {n: (after[n].sent - before[n].sent) / elapsed for n in weights}  # requests/s
    total = sum(got.values())
    print(f"\nshared budget of 10/s over 3 nodes: {total:.2f}/s; " + ", ".join(
        f"{n} {v:.2f}" for n, v in got.items()))  # fmt: skip
    assert total <= 10 * 1.05, got
    # near it: 9.99/s measured; a loaded machine's late senders may leave a few slots
    assert total >= 10 * 0.9, got
    ones = [got[n] for n in weights if weights[n] == 1]
    twos = [got[n] for n in weights if weights[n] == 2]
    assert 1.7 <= (sum(twos) / 2) / (sum(ones) / 4) <= 2.3, got


def test_cameras_outlive_their_head_and_a_new_head_adopts_them(
    cluster: Any, server: ServerThread, tmp_path: Path
) -> None:
    """On a cluster of its own (not ``--ray local``) the cameras are detached actors: the
    head SIGKILLed, they keep processing; a head started again with the same config
    adopts them (same incarnation, no second one), and its Ctrl-C stops them."""
    config = tmp_path / "cameras.yaml"
    out = tmp_path / "out"
    out.mkdir()
    live = "synthetic:?size=160x120&fps=10"
    config.write_text(
        f"api_url: {server.url}\nmodel: shapes/1\nmode: live\nmax_fps: 3\n"
        f"jsonl: {out}/{{camera}}.jsonl\ncameras:\n"
        f"  - {{name: door, source: '{live}'}}\n  - {{name: aisle, source: '{live}'}}\n"
    )
    command = [*STREAMER, "run", "--ray", cluster.address, "--config", str(config)]

    def recording() -> dict[str, Path]:
        found = {p.name.split(".")[1]: p for p in out.glob(".*.streamer-tmp.jsonl")}
        return found if set(found) == {"door", "aisle"} else {}

    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(recording, timeout=120, what="both cameras recording")
        files = recording()
        first.kill()  # SIGKILL: no goodbye, nothing stopped
        first.wait(30)
        sizes = {name: path.stat().st_size for name, path in files.items()}
        wait_for(
            lambda: all(path.stat().st_size > sizes[n] for n, path in files.items()),
            what="the cameras going on without a head",
        )
        second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        said = _lines_of(second)
        try:
            wait_for(
                lambda: sum("adopted (running on" in line for line in said) == 2,
                timeout=120,
                what="the new head adopting both cameras",
            )
            grown = {name: path.stat().st_size for name, path in files.items()}
            wait_for(
                lambda: all(path.stat().st_size > grown[n] for n, path in files.items()),
                what="more records under the new head",
            )
            assert recording() == files  # the same incarnations: adopted, not restarted
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(120)
    finally:
        if first.poll() is None:
            first.kill()
    stderr = "".join(said)
    assert second.returncode == 130, stderr
    committed = sorted(p.name.split(".")[0] for p in out.glob("*.jsonl"))
    assert committed == ["aisle", "door"]  # one file each: one incarnation each
    assert not ray.util.list_named_actors()  # the Ctrl-C stopped them all


def _lines_of(process: subprocess.Popen[str]) -> list[str]:
    """Its stderr's lines as they come, read by a thread (a pipe left unread fills)."""
    said: list[str] = []
    assert process.stderr is not None
    stream = process.stderr
    threading.Thread(
        target=lambda: said.extend(iter(stream.readline, "")), name="stderr", daemon=True
    ).start()
    return said
