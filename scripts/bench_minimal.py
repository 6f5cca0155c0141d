"""The floor: a minimal hand-written pipeline, with no streamer code in it.

A capture thread decodes with PyAV into a bounded queue; a thread pool sends frames
(resized to 640, JPEG, base64) over one httpx.Client; the main thread takes the
answers in order, tracks (ByteTrack), annotates (supervision) and encodes (PyAV).
What a careful engineer would write in an afternoon, used by scripts/bench.py.
"""

from __future__ import annotations

import base64
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import av
import cv2
import httpx
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

_END = object()


def _decode(path: str, frames: queue.Queue[Any]) -> None:
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frames.put(frame.to_ndarray(format="bgr24"))
    frames.put(_END)


def _infer(client: httpx.Client, model: str, image: np.ndarray) -> sv.Detections:
    height, width = image.shape[:2]
    scale = min(1.0, 640 / max(height, width))
    small = cv2.resize(image, (round(width * scale), round(height * scale))) if scale < 1 else image
    _, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    response = client.post(
        f"/{model}",
        content=base64.b64encode(jpeg.tobytes()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response.raise_for_status()
    detections = sv.Detections.from_inference(response.json())
    detections.xyxy = detections.xyxy / scale
    return detections


def run_minimal(video: str, url: str, model: str, workers: int, out: str) -> dict[str, Any]:
    frames: queue.Queue[Any] = queue.Queue(maxsize=2 * workers)
    reader = threading.Thread(
        target=_decode, args=(video, frames), name="minimal-decode", daemon=True
    )
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    tracker = ByteTrackTracker()
    box = sv.BoxAnnotator()
    count = 0
    started = time.perf_counter()
    with (
        httpx.Client(base_url=url, limits=limits, timeout=30) as client,
        ThreadPoolExecutor(workers, thread_name_prefix="minimal-send") as pool,
        av.open(out, "w") as container,
    ):
        stream = None
        pending: queue.Queue[tuple[np.ndarray, Future[sv.Detections]] | object] = queue.Queue(
            maxsize=workers
        )

        def submit() -> None:
            while True:
                image = frames.get()
                if image is _END:
                    pending.put(_END)
                    return
                pending.put((image, pool.submit(_infer, client, model, image)))

        reader.start()
        feeder = threading.Thread(target=submit, name="minimal-submit", daemon=True)
        feeder.start()
        while True:
            item = pending.get()
            if not isinstance(item, tuple):
                break  # the end
            image, future = item
            detections = tracker.update(future.result())
            annotated = box.annotate(image.copy(), detections)
            if stream is None:
                stream = container.add_stream("libx264", rate=30)
                stream.width, stream.height = image.shape[1] // 2 * 2, image.shape[0] // 2 * 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast"}
            frame = av.VideoFrame.from_ndarray(
                annotated[: stream.height, : stream.width], format="bgr24"
            )
            container.mux(stream.encode(frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return {"frames": count, "seconds": time.perf_counter() - started}
