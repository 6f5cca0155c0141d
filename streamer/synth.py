"""Synthetic scenes: bright shapes moving on known paths over a plain background.

The scene is a pure function of the frame index, so a frame and its ground truth
can be produced in any order: by ``streamer synth`` into a video file, or live
by a source that renders frames as the clock ticks. The ``shapes/*`` models of
the local server read these frames back exactly.

Example::

    scene = Scene(width=640, height=360, fps=30, objects=3, seed=1)
    image = scene.render(0)
    boxes = [t.box for t in scene.truth(0)]
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from streamer._av import av
from streamer.errors import ConfigError, SinkError

__all__ = [
    "BACKGROUND_BGR",
    "COLOURS",
    "SHAPE_CLASSES",
    "ObjectTruth",
    "Scene",
    "write_video",
]

Image = npt.NDArray[np.uint8]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
# Saturated BGR colours far apart in every channel pair that matters, so they
# survive H.264 and JPEG chroma subsampling and can be told apart by thresholds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (0, 0, 255),
    "green": (0, 255, 0),
    "blue": (255, 0, 0),
    "yellow": (0, 255, 255),
    "cyan": (255, 255, 0),
    "magenta": (255, 0, 255),
    "orange": (0, 128, 255),
    "white": (255, 255, 255),
}
BACKGROUND_BGR: tuple[int, int, int] = (40, 40, 40)


@dataclass(frozen=True)
class ObjectTruth:
    """Where one object is in one frame. ``box`` is (x1, y1, x2, y2), pixel edges."""

    object_id: int
    class_name: str
    class_id: int
    colour: str
    box: tuple[int, int, int, int]
    occluded: bool


@dataclass(frozen=True)
class _Mover:
    object_id: int
    shape: str
    colour: str
    half_size: int
    start: tuple[float, float]
    velocity: tuple[float, float]


def _bounce(start: float, speed: float, t: float, low: float, high: float) -> float:
    """Position at time t of a point bouncing between two walls (closed form)."""
    span = high - low
    if span <= 0:
        return low
    u = (start - low + speed * t) % (2 * span)
    return low + (u if u <= span else 2 * span - u)


class Scene:
    """A deterministic scene of ``objects`` shapes; each has a unique colour."""

    def __init__(
        self,
        *,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        objects: int = 5,
        seed: int = 0,
    ) -> None:
        if width < 64 or height < 64 or width > 7680 or height > 4320:
            raise ConfigError(f"scene size {width}x{height} is outside 64x64..7680x4320")
        if not 0 < fps <= 240:
            raise ConfigError(f"fps must be in (0, 240], got {fps}")
        if not 0 <= objects <= len(COLOURS):
            raise ConfigError(f"objects must be between 0 and {len(COLOURS)}, got {objects}")
        self.width = width
        self.height = height
        self.fps = fps
        self._background = np.empty((height, width, 3), dtype=np.uint8)
        self._background[:] = BACKGROUND_BGR
        rng = random.Random(seed)
        scale = min(width, height) / 720
        colours = list(COLOURS)
        rng.shuffle(colours)
        self._movers: list[_Mover] = []
        for object_id in range(objects):
            half = max(6, round(rng.uniform(36, 72) * scale))
            speed = rng.uniform(120, 260) * scale
            angle = rng.uniform(0, 2 * np.pi)
            self._movers.append(
                _Mover(
                    object_id=object_id,
                    shape=SHAPE_CLASSES[object_id % len(SHAPE_CLASSES)],
                    colour=colours[object_id],
                    half_size=half,
                    start=(
                        rng.uniform(half, width - half - 1),
                        rng.uniform(half, height - half - 1),
                    ),
                    velocity=(speed * float(np.cos(angle)), speed * float(np.sin(angle))),
                )
            )

    def _centres(self, index: int) -> list[tuple[int, int]]:
        t = index / self.fps
        centres = []
        for m in self._movers:
            cx = _bounce(m.start[0], m.velocity[0], t, m.half_size, self.width - m.half_size - 1)
            cy = _bounce(m.start[1], m.velocity[1], t, m.half_size, self.height - m.half_size - 1)
            centres.append((round(cx), round(cy)))
        return centres

    def truth(self, index: int) -> list[ObjectTruth]:
        """Ground truth of frame ``index``, in drawing order (later ones on top)."""
        centres = self._centres(index)
        boxes = [
            (cx - m.half_size, cy - m.half_size, cx + m.half_size + 1, cy + m.half_size + 1)
            for m, (cx, cy) in zip(self._movers, centres, strict=True)
        ]
        result = []
        for i, (m, box) in enumerate(zip(self._movers, boxes, strict=True)):
            covered = any(_overlaps(box, other) for other in boxes[i + 1 :])
            result.append(
                ObjectTruth(
                    object_id=m.object_id,
                    class_name=m.shape,
                    class_id=SHAPE_CLASSES.index(m.shape),
                    colour=m.colour,
                    box=box,
                    occluded=covered,
                )
            )
        return result

    def render(self, index: int, out: Image | None = None) -> Image:
        """Draw frame ``index`` (BGR), into ``out`` when given to reuse its buffer."""
        if out is None or out.shape != (self.height, self.width, 3):
            out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        # a plain copy of a ready background: broadcasting the 3-byte colour over the
        # frame cost 3 ms of the 4.3 ms a 720p frame took
        np.copyto(out, self._background)
        for m, (cx, cy) in zip(self._movers, self._centres(index), strict=True):
            colour = COLOURS[m.colour]
            s = m.half_size
            if m.shape == "circle":
                cv2.circle(out, (cx, cy), s, colour, thickness=-1, lineType=cv2.LINE_8)
            elif m.shape == "square":
                cv2.rectangle(out, (cx - s, cy - s), (cx + s, cy + s), colour, thickness=-1)
            else:
                corners = np.array([[cx, cy - s], [cx - s, cy + s], [cx + s, cy + s]], np.int32)
                cv2.fillPoly(out, [corners], colour, lineType=cv2.LINE_8)
        return out


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def write_video(
    path: str | Path,
    scene: Scene,
    *,
    seconds: float,
    truth_path: str | Path | None = None,
    crf: int = 18,
) -> int:
    """Encode ``seconds`` of ``scene`` as H.264 to ``path``; return the frame count.

    Frame i has pts i in a 1/fps time base, so its time is exactly i / fps.
    """
    if seconds <= 0:
        raise ConfigError(f"seconds must be positive, got {seconds}")
    frame_count = max(1, round(seconds * scene.fps))
    rate = Fraction(scene.fps).limit_denominator(1001)
    truth: list[list[dict[str, object]]] = []
    buffer: Image | None = None
    try:
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = scene.width - scene.width % 2
            stream.height = scene.height - scene.height % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for index in range(frame_count):
                buffer = scene.render(index, buffer)
                image = buffer[: stream.height, : stream.width]
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts = index
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
                truth.append([asdict(t) for t in scene.truth(index)])
            container.mux(stream.encode(None))
    except (OSError, av.FFmpegError) as exc:
        raise SinkError(f"cannot write video {path}: {exc}") from exc
    if truth_path is not None:
        document = {
            "width": scene.width,
            "height": scene.height,
            "fps": scene.fps,
            "classes": list(SHAPE_CLASSES),
            "frames": truth,
        }
        Path(truth_path).write_text(json.dumps(document))
    return frame_count
