"""Deterministic models for frames of ``streamer.synth`` scenes.

Every object in a scene has a unique colour from ``synth.COLOURS``, so one
colour mask is one object even when another shape splits it in two. The shape
class comes from how much of its box the object fills (square 1.0, circle
pi/4, triangle 0.5); the confidence says how close it came to that ideal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from streamer.server.models import (
    TASK_CLASSIFICATION,
    TASK_INSTANCE_SEGMENTATION,
    TASK_KEYPOINTS,
    TASK_OBJECT_DETECTION,
    Image,
    InferenceParams,
    Model,
)
from streamer.synth import COLOURS, SHAPE_CLASSES

__all__ = ["KEYPOINT_NAMES", "MODELS", "ShapesModel", "find_shapes"]

_TOLERANCE = 70  # per channel, wide enough for H.264 + JPEG, narrow enough to split colours
_FILL_IDEAL = {"square": 1.0, "circle": float(np.pi / 4), "triangle": 0.5}
KEYPOINT_NAMES: tuple[str, ...] = ("top", "right", "bottom", "left", "center")
COLOUR_CLASSES: tuple[str, ...] = (*COLOURS, "none")
INPUT_SIZE = 640


@dataclass(frozen=True)
class Blob:
    """One coloured object found in an image."""

    colour: str
    x1: int
    y1: int
    x2: int
    y2: int
    pixels: int
    contour: npt.NDArray[np.int32]  # outline of the largest part, (N, 2)

    @property
    def fill(self) -> float:
        return self.pixels / max(1, (self.x2 - self.x1) * (self.y2 - self.y1))


def _colour_mask(image: Image, bgr: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    low = np.array([max(0, c - _TOLERANCE) for c in bgr], dtype=np.uint8)
    high = np.array([min(255, c + _TOLERANCE) for c in bgr], dtype=np.uint8)
    return np.asarray(cv2.inRange(image, low, high), dtype=np.uint8)


def find_shapes(image: Image, *, min_pixels: int = 20) -> list[Blob]:
    """Every palette colour present in ``image`` with at least ``min_pixels`` pixels."""
    blobs = []
    for colour, bgr in COLOURS.items():
        mask = _colour_mask(image, bgr)
        pixels = int(cv2.countNonZero(mask))
        if pixels < min_pixels:
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        parts = [c for c in contours if cv2.contourArea(c) >= min_pixels / 4]
        if not parts:
            continue
        x, y, w, h = cv2.boundingRect(np.concatenate(parts))
        largest = max(parts, key=cv2.contourArea)
        outline = np.asarray(largest, dtype=np.int32).reshape(-1, 2)
        blobs.append(Blob(colour, x, y, x + w, y + h, pixels, outline))
    return blobs


def _classify_shape(blob: Blob) -> tuple[str, float]:
    name = min(_FILL_IDEAL, key=lambda k: abs(_FILL_IDEAL[k] - blob.fill))
    confidence = max(0.05, 1.0 - 2.0 * abs(_FILL_IDEAL[name] - blob.fill))
    return name, round(confidence, 3)


def _keypoints(blob: Blob) -> list[dict[str, Any]]:
    c = blob.contour
    extremes = (
        c[c[:, 1].argmin()],
        c[c[:, 0].argmax()],
        c[c[:, 1].argmax()],
        c[c[:, 0].argmin()],
    )
    moments = cv2.moments(c)
    if moments["m00"]:
        centre = (moments["m10"] / moments["m00"], moments["m01"] / moments["m00"])
    else:
        centre = ((blob.x1 + blob.x2) / 2, (blob.y1 + blob.y2) / 2)
    points = [(float(p[0]), float(p[1])) for p in extremes] + [centre]
    return [
        {"x": round(x, 1), "y": round(y, 1), "confidence": 1.0, "class_id": i, "class": name}
        for i, (name, (x, y)) in enumerate(zip(KEYPOINT_NAMES, points, strict=True))
    ]


class ShapesModel:
    """Detection, segmentation or keypoints of synthetic shapes, chosen by ``task_type``."""

    input_size = INPUT_SIZE

    def __init__(self, task_type: str) -> None:
        self.task_type = task_type

    def infer(self, image: Image, params: InferenceParams) -> dict[str, Any]:
        if self.task_type == TASK_CLASSIFICATION:
            return _classify_colour(image, params)
        predictions = []
        for blob in find_shapes(image):
            name, confidence = _classify_shape(blob)
            if confidence < params.confidence:
                continue
            prediction: dict[str, Any] = {
                "x": (blob.x1 + blob.x2) / 2,
                "y": (blob.y1 + blob.y2) / 2,
                "width": float(blob.x2 - blob.x1),
                "height": float(blob.y2 - blob.y1),
                "confidence": confidence,
                "class": name,
                "class_id": SHAPE_CLASSES.index(name),
            }
            if self.task_type == TASK_INSTANCE_SEGMENTATION:
                outline = cv2.approxPolyDP(blob.contour.reshape(-1, 1, 2), 1.0, True)
                prediction["points"] = [
                    {"x": float(p[0]), "y": float(p[1])} for p in outline.reshape(-1, 2)
                ]
            elif self.task_type == TASK_KEYPOINTS:
                prediction["keypoints"] = _keypoints(blob)
            predictions.append(prediction)
        predictions.sort(key=lambda p: -p["confidence"])
        return {"predictions": predictions[: params.max_detections]}


def _classify_colour(image: Image, params: InferenceParams) -> dict[str, Any]:
    """Single-label classification: the palette colour covering the most pixels."""
    counts = {
        name: int(cv2.countNonZero(_colour_mask(image, bgr))) for name, bgr in COLOURS.items()
    }
    total = sum(counts.values())
    if total == 0:
        scores = {name: 0.0 for name in COLOURS} | {"none": 1.0}
    else:
        scores = {name: count / total for name, count in counts.items()} | {"none": 0.0}
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    predictions = [
        {"class": name, "class_id": COLOUR_CLASSES.index(name), "confidence": round(score, 4)}
        for name, score in ranked
    ]
    top, top_score = ranked[0]
    return {"predictions": predictions, "top": top, "confidence": round(top_score, 4)}


def _factory(task_type: str) -> Callable[[Path, bool], Model]:
    def build(models_dir: Path, download: bool) -> Model:
        return ShapesModel(task_type)

    return build


MODELS: tuple[tuple[str, str, Callable[[Path, bool], Model]], ...] = (
    ("shapes/1", TASK_OBJECT_DETECTION, _factory(TASK_OBJECT_DETECTION)),
    ("shapes-seg/1", TASK_INSTANCE_SEGMENTATION, _factory(TASK_INSTANCE_SEGMENTATION)),
    ("shapes-pose/1", TASK_KEYPOINTS, _factory(TASK_KEYPOINTS)),
    ("shapes-cls/1", TASK_CLASSIFICATION, _factory(TASK_CLASSIFICATION)),
)
