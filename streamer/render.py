"""Drawing results onto frames with supervision's annotators, plus an optional HUD."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv

from streamer.client import Classification
from streamer.detections import copy_detections, select
from streamer.frames import Frame

__all__ = ["Hud", "RenderConfig", "Renderer", "canvas_for"]

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    boxes: bool = True
    labels: bool = True
    polygons: bool = True
    keypoints: bool = True
    traces: bool = True
    trace_seconds: float = 2.0
    hud: bool = True


@dataclass(frozen=True)
class Hud:
    """Figures for the heads-up display, drawn top left."""

    source_fps: float | None
    inference_fps: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    dropped: int
    status: str

    def lines(self) -> list[str]:
        def f(value: float | None, unit: str) -> str:
            return "-" if value is None else f"{value:.1f}{unit}"

        return [
            f"source {f(self.source_fps, ' fps')}  inference {f(self.inference_fps, ' fps')}",
            f"latency p50 {f(self.latency_p50_ms, ' ms')}  p95 {f(self.latency_p95_ms, ' ms')}",
            f"not sent {self.dropped}  {self.status}",
        ]


class Renderer:
    """Annotates a copy of each frame; the annotators' state (traces) lives here."""

    def __init__(self, config: RenderConfig | None = None, *, fps: float = 30.0) -> None:
        self.config = config = config or RenderConfig()
        lookup = sv.ColorLookup.TRACK
        self._box = sv.BoxAnnotator(thickness=2, color_lookup=lookup)
        self._label = sv.LabelAnnotator(text_scale=0.5, text_padding=4, color_lookup=lookup)
        self._trace = sv.TraceAnnotator(
            trace_length=max(2, round(config.trace_seconds * fps)), thickness=2, color_lookup=lookup
        )
        self._vertex = sv.VertexAnnotator(radius=4)
        self._edge = sv.EdgeAnnotator(thickness=2)
        self._palette = sv.ColorPalette.DEFAULT

    def render(
        self,
        image: Image,
        detections: sv.Detections,
        *,
        predicted: bool = False,
        keypoints: sv.KeyPoints | None = None,
        classification: Classification | None = None,
        hud: Hud | None = None,
        overlay: Callable[[Image], Image] | None = None,
    ) -> Image:
        """``overlay``: draws on the copy first, under the boxes (zones and lines)."""
        canvas = image.copy()
        if overlay is not None:
            canvas = overlay(canvas)
        labels = _labels(detections, predicted)
        has_ids = detections.tracker_id is not None
        coloured = _colourable(detections)  # supervision colours by track id: -1 gets colour 0
        if self.config.polygons and "polygons" in detections.data:
            self._polygons(canvas, coloured)
        if self.config.traces and has_ids and len(detections):
            assert detections.tracker_id is not None
            canvas = self._trace.annotate(canvas, select(detections, detections.tracker_id >= 0))
        if self.config.boxes and len(detections):
            canvas = self._box.annotate(canvas, coloured)
        if self.config.labels and len(detections):
            canvas = self._label.annotate(canvas, coloured, labels=labels)
        if self.config.keypoints and keypoints is not None and len(keypoints):
            canvas = self._edge.annotate(canvas, keypoints)
            canvas = self._vertex.annotate(canvas, keypoints)
        if classification is not None:
            _text(canvas, [f"{classification.top} {classification.confidence:.2f}"], bottom=True)
        if self.config.hud and hud is not None:
            _text(canvas, hud.lines())
        return canvas

    def _polygons(self, canvas: Image, detections: sv.Detections) -> None:
        ids = (
            detections.tracker_id
            if detections.tracker_id is not None
            else np.zeros(len(detections), int)
        )
        for polygon, tracker_id in zip(detections.data["polygons"], ids, strict=True):
            if len(polygon) < 3:
                continue
            colour = self._palette.by_idx(int(tracker_id)).as_bgr()
            points = np.asarray(polygon, dtype=np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [points], isClosed=True, color=colour, thickness=2)


def _colourable(detections: sv.Detections) -> sv.Detections:
    copy = copy_detections(detections)
    ids = copy.tracker_id if copy.tracker_id is not None else np.zeros(len(copy), dtype=int)
    copy.tracker_id = np.where(ids < 0, 0, ids)
    return copy


def _labels(detections: sv.Detections, predicted: bool) -> list[str]:
    names = detections.data.get("class_name")
    labels = []
    for i in range(len(detections)):
        name = (
            str(names[i])
            if names is not None
            else str(detections.class_id[i] if detections.class_id is not None else "")
        )
        tracked = detections.tracker_id is not None and detections.tracker_id[i] >= 0
        parts = [f"#{int(detections.tracker_id[i])}"] if tracked else []  # type: ignore[index]
        parts.append(name)
        if detections.confidence is not None and not predicted:
            parts.append(f"{float(detections.confidence[i]):.2f}")
        if predicted:
            parts.append("(pred)")
        labels.append(" ".join(parts))
    return labels


def _text(canvas: Image, lines: list[str], *, bottom: bool = False) -> None:
    scale, thickness, pad, step = 0.5, 1, 6, 18
    width = max(
        cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for line in lines
    )
    height = step * len(lines) + pad
    top = canvas.shape[0] - height - pad if bottom else pad
    region = canvas[top : top + height, pad : pad + width + 2 * pad]
    region[:] = (region * 0.4).astype(np.uint8)  # darken behind the text so it reads on any frame
    for i, line in enumerate(lines):
        y = top + pad + step * i + 12
        cv2.putText(
            canvas,
            line,
            (2 * pad, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )


def canvas_for(frame: Frame, detections: sv.Detections, width: int) -> tuple[Image, sv.Detections]:
    """The frame's pixels no wider than ``width`` and the detections in their
    coordinates, to draw for an output that shows no more (a preview): a 720p frame
    shrunk to 640 has a quarter of the pixels to convert and draw. Masks and polygons
    are in the frame's own coordinates: with them, the frame as it is."""
    frame_width, height = frame.size
    if frame_width <= width or detections.mask is not None or "polygons" in detections.data:
        return frame.pixels(), detections
    size = (width, max(1, round(height * width / frame_width)))
    pixels = frame.pixels(fit=max(size))
    if pixels.shape[1] != size[0]:  # the frame gave more than asked: shrink it here
        pixels = np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))
    scaled = copy_detections(detections)
    scaled.xyxy = detections.xyxy * (pixels.shape[1] / frame_width)
    return pixels, scaled
