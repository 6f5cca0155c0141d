"""The web view's live previews (MJPEG) and pages, over real HTTP against a fleet with a
live synthetic camera and the local server: nothing is drawn or encoded while nobody
watches, every viewer shares one encode per frame, a viewer that does not read holds
nothing up, and off the token the pages ask for it."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import cv2
import httpx
import numpy as np

from streamer.fleet import Fleet
from streamer.server import ServerThread
from streamer.sinks.preview import AGE_COMMENT, MjpegReader, PreviewConfig, jpeg_comment
from streamer.web import TOKEN_COOKIE, ControlServer, start_control_server
from tests.helpers import wait_for

LIVE = "synthetic:?size=320x240&fps=25"


def read_jpegs(
    url: str, count: int, ages: list[float] | None = None, **options: Any
) -> list[np.ndarray]:
    """The first ``count`` JPEGs of an MJPEG stream, decoded; each part's capture age
    (ms, from the JPEG's comment) goes into ``ages`` when given."""
    images: list[np.ndarray] = []
    reader = MjpegReader()
    with httpx.stream("GET", url, timeout=20, **options) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in answer.iter_bytes():
            for jpeg in reader.feed(chunk):
                comment = jpeg_comment(jpeg) or ""
                if ages is not None:
                    ages.append(float(comment.removeprefix(AGE_COMMENT)))
                images.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
            if len(images) >= count:
                return images
    return images


def test_a_preview_costs_nothing_unwatched_and_moves_when_watched(
    web: tuple[Fleet, ControlServer],
) -> None:
    fleet, control = web
    camera = fleet.add("syn", LIVE)
    wait_for(lambda: camera.pipeline.status().ok >= 3, what="results")
    assert camera.preview is not None
    assert camera.pipeline.status().drawn == 0  # nobody watches: nothing drawn
    assert camera.preview.encoded == 0
    page = httpx.get(f"{control.url}/", timeout=10).text
    assert "/camera/syn/preview.mjpg" in page
    ages: list[float] = []
    images = read_jpegs(f"{control.url}/camera/syn/preview.mjpg", 8, ages)
    assert len(images) == 8
    assert len(ages) == 8
    assert all(0 <= age < 5000 for age in ages)  # a live frame's age, not a stale one
    assert all(image.shape == (240, 320, 3) for image in images)
    assert float(np.abs(images[0].astype(int) - images[-1].astype(int)).mean()) > 1  # moving
    wait_for(lambda: camera.preview is not None and camera.preview.viewers == 0, what="gone")
    # drawn only for the viewer, at the preview's rate, each drawn frame encoded once
    assert camera.preview.encoded <= camera.pipeline.status().drawn <= camera.preview.encoded + 2
    assert httpx.get(f"{control.url}/camera/syn", timeout=10).status_code == 200
    assert httpx.get(f"{control.url}/camera/nope", timeout=10).status_code == 404


def test_twenty_viewers_share_one_encode_per_frame(web: tuple[Fleet, ControlServer]) -> None:
    fleet, control = web
    camera = fleet.add("syn", LIVE)
    wait_for(lambda: camera.pipeline.status().ok >= 1, what="a result")
    received: list[int] = []
    lock = threading.Lock()

    def view() -> None:
        got = len(read_jpegs(f"{control.url}/camera/syn/preview.mjpg", 10))
        with lock:
            received.append(got)

    viewers = [threading.Thread(target=view, name=f"viewer-{i}") for i in range(20)]
    started = time.monotonic()
    for viewer in viewers:
        viewer.start()
    for viewer in viewers:
        viewer.join(60)
    elapsed = time.monotonic() - started
    assert received == [10] * 20
    assert camera.preview is not None
    # 200 JPEGs delivered; the encodes follow the clock (10 a second at most), not the
    # viewers: however slow the machine, never one per viewer
    assert camera.preview.encoded <= elapsed * 10 + 2
    assert camera.preview.encoded < 200
    metrics = httpx.get(f"{control.url}/metrics", timeout=10).text
    assert 'streamer_preview_viewers_total{camera="syn"} 20.0' in metrics
    wait_for(lambda: camera.preview is not None and camera.preview.viewers == 0, what="gone")
    metrics = httpx.get(f"{control.url}/metrics", timeout=10).text
    assert 'streamer_preview_watching{camera="syn"} 0.0' in metrics


def test_a_viewer_that_never_reads_holds_nothing_up(web: tuple[Fleet, ControlServer]) -> None:
    fleet, control = web
    camera = fleet.add("syn", LIVE)
    host, port = control.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /camera/syn/preview.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: camera.preview is not None and camera.preview.viewers == 1, what="it")
        before = camera.pipeline.status().ok
        # never read: its socket fills; the camera goes on, and so does another viewer
        assert len(read_jpegs(f"{control.url}/camera/syn/preview.mjpg", 5)) == 5
        wait_for(lambda: camera.pipeline.status().ok >= before + 10, what="inference going on")


def test_with_a_token_pages_ask_for_it_and_a_cookie_lets_a_browser_in(
    server: ServerThread,
) -> None:
    base = {"api_url": server.url, "model": "shapes/1", "mode": "live", "max_fps": 5}
    with Fleet(base) as fleet:
        control = start_control_server(fleet, "127.0.0.1:0", "s3cret-token")
        try:
            fleet.add("syn", LIVE)
            page = httpx.get(f"{control.url}/", timeout=10)
            assert page.status_code == 401
            assert "<form" in page.text  # the login form
            stream = httpx.get(f"{control.url}/camera/syn/preview.mjpg", timeout=10)
            assert stream.status_code == 401
            wrong = httpx.post(f"{control.url}/login", data={"token": "nope"}, timeout=10)
            assert wrong.status_code == 401
            with httpx.Client(base_url=control.url, timeout=10) as browser:
                login = browser.post("/login", data={"token": "s3cret-token"})
                assert login.status_code == 303
                assert browser.cookies.get(TOKEN_COOKIE) == "s3cret-token"
                assert browser.get("/").status_code == 200
                assert browser.get("/api/stats").status_code == 200
                assert len(read_jpegs(f"{control.url}/camera/syn/preview.mjpg", 2,
                                      cookies={TOKEN_COOKIE: "s3cret-token"})) == 2  # fmt: skip
        finally:
            control.close()
            fleet.stop()


def test_each_jpeg_is_followed_at_once_by_the_next_parts_headers(server: ServerThread) -> None:
    """A browser shows a part only when the next part's headers arrive: they must go out
    with the JPEG, not with the next one (Chromium would show every frame one preview
    interval late). At 0.5 previews a second, the headers after the first JPEG come
    while only one JPEG exists."""
    base = {"api_url": server.url, "model": "shapes/1", "mode": "live", "max_fps": 5}
    with Fleet(base) as fleet:
        control = start_control_server(fleet, "127.0.0.1:0", None, PreviewConfig(fps=0.5))
        try:
            camera = fleet.add("syn", LIVE)
            preview = camera.preview
            assert preview is not None
            received = b""
            with httpx.stream(
                "GET", f"{control.url}/camera/syn/preview.mjpg", timeout=20
            ) as answer:
                for chunk in answer.iter_bytes():
                    received += chunk
                    end = received.find(b"\xff\xd9")  # the first JPEG's end (no EOI inside)
                    if end >= 0 and received.endswith(
                        b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n"
                    ):
                        break
            assert preview.encoded == 1  # the next part has not been made yet
            jpegs = MjpegReader().feed(received)
            assert len(jpegs) == 1
            assert (jpeg_comment(jpegs[0]) or "").startswith(AGE_COMMENT)
            image = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR)
            assert image is not None
            assert image.shape == (240, 320, 3)
        finally:
            control.close()
            fleet.stop()
