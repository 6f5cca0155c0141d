"""YOLOX-nano (COCO) through onnxruntime: letterbox, grid decode, NMS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from streamer.errors import ModelError
from streamer.server.models import (
    TASK_OBJECT_DETECTION,
    Image,
    InferenceParams,
    Weights,
    locate_weights,
)

__all__ = ["COCO_CLASSES", "YOLOX_NANO", "YoloxDetector", "load_coco"]

YOLOX_NANO = Weights(
    filename="yolox_nano.onnx",
    sha256="d39bee73564e338080378b0ad567fbb40e818b55bbfaf971de82a0267ed16b8a",
    url=(
        "https://raw.githubusercontent.com/hamacom2004jp/iinfer/"
        "c7f9a3c5216c6f8b3e8b35886f863dffa2dc0bf9/models/yolox_nano.onnx"
    ),
)

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

_STRIDES = (8, 16, 32)
_PAD_VALUE = 114


class YoloxDetector:
    """YOLOX exported with a raw head: per anchor cx, cy, w, h (grid units), obj, classes."""

    task_type = TASK_OBJECT_DETECTION

    def __init__(self, weights: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The server runs requests in parallel; one thread per run scales better
        # on small machines than every run fighting for all cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(weights), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {weights}: {exc}") from exc
        model_input = self._session.get_inputs()[0]
        self._input_name: str = model_input.name
        self.input_size: int = int(model_input.shape[2])
        self._grid, self._stride = _make_grid(self.input_size)
        self.classes = COCO_CLASSES

    def infer(self, image: Image, params: InferenceParams) -> dict[str, Any]:
        blob, ratio = _letterbox(image, self.input_size)
        raw = self._session.run(None, {self._input_name: blob})[0][0]
        xy = (raw[:, :2] + self._grid) * self._stride
        wh = np.exp(raw[:, 2:4]) * self._stride
        scores = raw[:, 4:5] * raw[:, 5:]
        class_ids = scores.argmax(axis=1)
        confidences = scores[np.arange(len(scores)), class_ids]
        keep = confidences >= params.confidence
        if not keep.any():
            return {"predictions": []}
        xy, wh, class_ids, confidences = xy[keep], wh[keep], class_ids[keep], confidences[keep]
        boxes = (np.concatenate([xy - wh / 2, wh], axis=1) / ratio).astype(np.float32)  # x,y,w,h
        chosen = _nms(boxes, confidences, class_ids, params)
        height, width = image.shape[:2]
        predictions = []
        for i in chosen:
            x1 = float(np.clip(boxes[i, 0], 0, width))
            y1 = float(np.clip(boxes[i, 1], 0, height))
            x2 = float(np.clip(boxes[i, 0] + boxes[i, 2], 0, width))
            y2 = float(np.clip(boxes[i, 1] + boxes[i, 3], 0, height))
            if x2 <= x1 or y2 <= y1:
                continue
            class_id = int(class_ids[i])
            predictions.append(
                {
                    "x": round((x1 + x2) / 2, 1),
                    "y": round((y1 + y2) / 2, 1),
                    "width": round(x2 - x1, 1),
                    "height": round(y2 - y1, 1),
                    "confidence": round(float(confidences[i]), 3),
                    "class": self.classes[class_id],
                    "class_id": class_id,
                }
            )
        return {"predictions": predictions}


def _make_grid(size: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    grids, strides = [], []
    for stride in _STRIDES:
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((cells * cells, 1), stride))
    return (
        np.concatenate(grids).astype(np.float32),
        np.concatenate(strides).astype(np.float32),
    )


def _letterbox(image: Image, size: int) -> tuple[npt.NDArray[np.float32], float]:
    """Resize keeping aspect ratio into the top-left of a padded square, as YOLOX trains."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    resized = cv2.resize(
        image,
        (max(1, round(width * ratio)), max(1, round(height * ratio))),
        interpolation=cv2.INTER_LINEAR,
    )
    canvas = np.full((size, size, 3), _PAD_VALUE, dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    return np.ascontiguousarray(blob), ratio


def _nms(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    class_ids: npt.NDArray[np.int64],
    params: InferenceParams,
) -> list[int]:
    """Indices kept by NMS (per class unless class-agnostic), best first."""
    box_list = boxes.tolist()
    score_list = scores.astype(float).tolist()
    if params.class_agnostic_nms:
        kept = cv2.dnn.NMSBoxes(box_list, score_list, params.confidence, params.overlap)
    else:
        kept = cv2.dnn.NMSBoxesBatched(
            box_list, score_list, class_ids.astype(int).tolist(), params.confidence, params.overlap
        )
    order = sorted((int(i) for i in np.asarray(kept).reshape(-1)), key=lambda i: -score_list[i])
    return order[: params.max_detections]


def load_coco(models_dir: Path, download: bool) -> YoloxDetector:
    """The ``coco/1`` model: YOLOX-nano weights from ``models_dir``."""
    return YoloxDetector(locate_weights(YOLOX_NANO, models_dir, download=download))
