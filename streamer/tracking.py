"""Tracking: ByteTrack fed capture timestamps, and predictions for frames not inferred.

``trackers.ByteTrackTracker.update(detections, timestamp=...)`` scales its Kalman
step by the time since the last update, so frames that were skipped are accounted
for. Between inferred frames, ``predict`` extrapolates each live track's state to
the frame's timestamp without touching the tracker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import supervision as sv
from trackers import ByteTrackTracker

from streamer.detections import copy_detections
from streamer.errors import ConfigError

__all__ = ["TrackerConfig", "Tracking"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    lost_track_seconds: float = 1.0
    activation_threshold: float = 0.5  # a detection this confident may start a track
    high_confidence: float = 0.5  # ByteTrack's first association stage
    minimum_iou: float = 0.1
    minimum_consecutive: int = 1  # 1: a track has an id from its first detection

    def __post_init__(self) -> None:
        if self.lost_track_seconds <= 0:
            raise ConfigError("lost_track_seconds must be > 0")
        if self.minimum_consecutive < 1:
            raise ConfigError("minimum_consecutive must be >= 1")


class Tracking:
    """Owns one ByteTrack; use from one thread (the render thread)."""

    def __init__(self, frame_rate: float, config: TrackerConfig | None = None) -> None:
        config = config or TrackerConfig()
        self.frame_rate = frame_rate if frame_rate > 0 else 30.0
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(config.lost_track_seconds * 30)),  # in 30 fps frames
            frame_rate=self.frame_rate,
            track_activation_threshold=config.activation_threshold,
            minimum_consecutive_frames=config.minimum_consecutive,
            minimum_iou_threshold=config.minimum_iou,
            high_conf_det_threshold=config.high_confidence,
        )
        self._labels: dict[int, tuple[int, str, float]] = {}  # id -> class_id, class_name, conf
        # Tracks born in the last update have no id yet (ByteTrack gives one on the
        # second match); their labels are found again by box.
        self._newborn: list[tuple[npt.NDArray[np.float32], tuple[int, str, float]]] = []
        self._last_timestamp: float | None = None

    def update(self, detections: sv.Detections, timestamp: float) -> sv.Detections:
        """Associate ``detections`` (of the frame at ``timestamp`` s) with tracks.

        A timestamp older than the last one is skipped by ByteTrack: a late result
        cannot rewrite history; its detections come back with ``tracker_id`` -1.
        """
        if self._last_timestamp is not None and timestamp < self._last_timestamp:
            late = copy_detections(detections)
            late.tracker_id = np.full(len(detections), -1, dtype=int)
            return late
        tracked = self._tracker.update(detections, timestamp=timestamp)
        self._last_timestamp = timestamp
        names = tracked.data.get("class_name")
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.array([], dtype=int)
        self._newborn = []
        for i, tracker_id in enumerate(ids):
            class_id = int(tracked.class_id[i]) if tracked.class_id is not None else -1
            name = str(names[i]) if names is not None else str(class_id)
            confidence = float(tracked.confidence[i]) if tracked.confidence is not None else 1.0
            if tracker_id >= 0:
                self._labels[int(tracker_id)] = (class_id, name, confidence)
            else:
                self._newborn.append((tracked.xyxy[i], (class_id, name, confidence)))
        return tracked

    @property
    def last_update(self) -> float | None:
        """The timestamp of the newest detections the tracker took; ``None``: none yet."""
        return self._last_timestamp

    def predict(self, timestamp: float) -> sv.Detections:
        """Where the tracks are at ``timestamp``: Kalman states run forward, tracker untouched."""
        tracks = self._tracks()
        if not tracks or self._last_timestamp is None:
            return _empty()
        steps = max(0.0, timestamp - self._last_timestamp) * self.frame_rate
        boxes, ids, labels = [], [], []
        for track in tracks:
            tracker_id = int(getattr(track, "tracker_id", -1))
            label = self._labels.get(tracker_id) if tracker_id >= 0 else self._newborn_label(track)
            box = _extrapolate(track, steps)
            if box is None or label is None:
                continue
            boxes.append(box)
            ids.append(tracker_id)
            labels.append(label)
        if not boxes:
            return _empty()
        return sv.Detections(
            xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            confidence=np.array([label[2] for label in labels], dtype=np.float32),
            class_id=np.array([label[0] for label in labels], dtype=int),
            tracker_id=np.array(ids, dtype=int),
            data={"class_name": np.array([label[1] for label in labels], dtype=object)},
        )

    def _newborn_label(self, track: Any) -> tuple[int, str, float] | None:
        """The label of a track born in the last update: its box is the detection's."""
        box = np.asarray(track.get_state_bbox(), dtype=np.float32)
        for born_box, label in self._newborn:
            if np.allclose(born_box, box, atol=1.0):
                return label
        return None

    def _tracks(self) -> list[Any]:
        return list(getattr(self._tracker, "tracks", []))


def _extrapolate(track: Any, steps: float) -> list[float] | None:
    """Box of ``track`` ``steps`` nominal frames ahead; the XYXY state holds per-corner velocity."""
    if getattr(track, "time_since_update", 0) > 0:
        return None  # already coasting without a detection: do not draw a guess of a guess
    try:
        state = np.asarray(track.state_estimator.kf.state, dtype=np.float64).reshape(-1)
    except AttributeError:
        return [float(v) for v in track.get_state_bbox()]
    if state.size < 8:
        return [float(v) for v in track.get_state_bbox()]
    box = state[:4] + state[4:8] * steps
    return [float(v) for v in box]


def _empty() -> sv.Detections:
    detections = sv.Detections.empty()
    detections.tracker_id = np.array([], dtype=int)
    detections.data = {"class_name": np.array([], dtype=object)}
    return detections
