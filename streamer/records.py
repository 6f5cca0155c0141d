"""One output record per output frame: what JSON lines and webhooks carry.

Schema (keys downstream consumers rely on)::

    {
      "camera": "door",                       # the camera's name, unique in the run
      "run_id": "20261128T091500-3f2a",       # one per run: tells runs apart in one file
      "source": "rtsp://cam/stream",         # credentials masked
      "frame_index": 42,                      # counts every decoded frame of the source
      "pts": 1.4,                             # seconds, stream time (null when unknown)
      "wall_time": 1764201600.123,            # Unix seconds when the record was made
      "status": "ok",                         # ok | predicted | stale | failed: <reason>
      "latency_ms": {"queue": .., "prepare": .., "round_trip": .., "server": .., "parse": ..,
                     "total": ..},            # total: capture -> result; {} when not inferred
      "detections": [{"class": "person", "class_id": 0, "confidence": 0.91, "tracker_id": 3,
                      "x": 320.5, "y": 200.0, "width": 50.0, "height": 120.0,   # center-based
                      "x1": 295.5, "y1": 140.0, "x2": 345.5, "y2": 260.0}],
      "classification": {"top": "cat", "confidence": 0.9}      # classification models only
    }
"""

from __future__ import annotations

import time
from typing import Any

import supervision as sv

from streamer.client import Classification
from streamer.frames import Result, Status

__all__ = ["OK", "PREDICTED", "STALE", "build_record", "status_text"]

OK = "ok"
PREDICTED = "predicted"
STALE = "stale"


def status_text(result: Result | None) -> str:
    """The record status for a frame's result (``None``: the frame was not sent)."""
    if result is None:
        return PREDICTED
    if result.status is Status.OK:
        return OK
    if result.status is Status.STALE:
        return STALE
    return f"failed: {result.reason}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def latency_ms(result: Result | None) -> dict[str, float | None]:
    if result is None:
        return {}
    t = result.timings
    return {
        "queue": _ms(t.queue_wait),
        "prepare": _ms(t.prepare),
        "round_trip": _ms(t.round_trip),
        "server": _ms(t.server),
        "parse": _ms(t.parse),
        "total": _ms(result.completed_at - result.frame.captured_at),
    }


def detections_json(detections: sv.Detections) -> list[dict[str, Any]]:
    names = detections.data.get("class_name")
    out = []
    for i in range(len(detections)):
        x1, y1, x2, y2 = (round(float(v), 1) for v in detections.xyxy[i])
        out.append(
            {
                "class": str(names[i]) if names is not None else "",
                "class_id": int(detections.class_id[i]) if detections.class_id is not None else -1,
                "confidence": round(float(detections.confidence[i]), 4)
                if detections.confidence is not None
                else None,
                "tracker_id": int(detections.tracker_id[i])
                if detections.tracker_id is not None
                else None,
                "x": round((x1 + x2) / 2, 1),
                "y": round((y1 + y2) / 2, 1),
                "width": round(x2 - x1, 1),
                "height": round(y2 - y1, 1),
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
            }
        )
    return out


def build_record(
    *,
    camera: str,
    run_id: str,
    source: str,
    frame_index: int,
    pts: float | None,
    status: str,
    result: Result | None,
    detections: sv.Detections,
    classification: Classification | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "camera": camera,
        "run_id": run_id,
        "source": source,
        "frame_index": frame_index,
        "pts": None if pts is None else round(pts, 6),
        "wall_time": round(time.time(), 3),
        "status": status,
        "latency_ms": latency_ms(result),
        "detections": detections_json(detections),
    }
    if classification is not None:
        record["classification"] = {
            "top": classification.top,
            "confidence": round(classification.confidence, 4),
        }
    return record
