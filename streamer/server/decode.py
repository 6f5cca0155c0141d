"""Turning request parts into images and parameters; pure functions, no HTTP.

Every failure raises ``BadRequest`` with a message fit to send back as a 400.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np

from streamer.server.models import Image, InferenceParams

__all__ = ["MAX_PIXELS", "BadRequest", "decode_base64_image", "decode_image_bytes", "parse_params"]

# 8K is the largest frame a video client sends; anything bigger is an attack or a mistake,
# and decoding it would hold hundreds of MB.
MAX_PIXELS = 7680 * 4320


# Roboflow's server words image errors this way; clients may match on it.
_CANNOT_LOAD = "Could not load input image. Cause: "
_RAW_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"RIFF", b"GIF8")


class BadRequest(ValueError):
    """The request cannot be served as sent (answer 400)."""


def decode_image_bytes(data: bytes) -> Image:
    """Decode JPEG/PNG/... bytes into a BGR image."""
    if not data:
        raise BadRequest(f"{_CANNOT_LOAD}empty image")
    buffer = np.frombuffer(data, dtype=np.uint8)
    header_ok = _check_declared_size(data)
    if not header_ok:
        raise BadRequest(f"{_CANNOT_LOAD}image is larger than {MAX_PIXELS} pixels")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise BadRequest(
            f"{_CANNOT_LOAD}could not decode the image: not a JPEG, PNG, BMP or WebP file"
        )
    return np.asarray(image, dtype=np.uint8)


def _check_declared_size(data: bytes) -> bool:
    """Refuse PNGs that declare absurd sizes before decoding them (decompression bombs)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width = int.from_bytes(data[16:20], "big")
        height = int.from_bytes(data[20:24], "big")
        return width * height <= MAX_PIXELS
    return True


def decode_base64_image(text: str | bytes) -> Image:
    """Decode a base64 image as clients send it: raw, data-URI, or form-encoded."""
    if isinstance(text, bytes):
        if text.startswith(_RAW_IMAGE_MAGIC):
            # as Roboflow's server answers: the model route takes base64 only
            raise BadRequest(
                f"{_CANNOT_LOAD}Invalid base64 input: the image payload contains raw bytes instead "
                "of a base64-encoded string. Please base64-encode the image before sending."
            )
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{_CANNOT_LOAD}Malformed base64 input image (not text)") from exc
    text = text.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if "%" in text:
        text = unquote(text)
    # Form decoding turns '+' into ' '; base64 never contains spaces.
    text = text.replace(" ", "+").replace("\n", "").replace("\r", "")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{_CANNOT_LOAD}Malformed base64 input image.") from exc
    return decode_image_bytes(data)


def _fraction(raw: Any, name: str, default: float) -> float:
    """A threshold given as 0-100 or as a fraction below 1, as Roboflow's server takes it."""
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value) or value < 0 or value > 100:
        raise BadRequest(f"{name} must be between 0 and 100, got {raw!r}")
    return value / 100 if value >= 1 else value


def _bool(raw: Any, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return False
    text = str(raw).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise BadRequest(f"{name} must be true or false, got {raw!r}")


def parse_params(
    values: Mapping[str, Any],
    *,
    confidence_key: str = "confidence",
    overlap_key: str = "overlap",
) -> InferenceParams:
    """Thresholds and limits from query parameters or a JSON body."""
    max_raw = values.get("max_detections")
    if max_raw is None or max_raw == "":
        max_detections = 300
    else:
        try:
            max_detections = int(max_raw)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadRequest(f"max_detections must be an integer, got {max_raw!r}") from exc
        if not 0 <= max_detections <= 10_000:
            raise BadRequest(f"max_detections must be between 0 and 10000, got {max_raw!r}")
    return InferenceParams(
        confidence=_fraction(values.get(confidence_key), "confidence", 0.4),
        overlap=_fraction(values.get(overlap_key), "overlap", 0.3),
        max_detections=max_detections,
        class_agnostic_nms=_bool(values.get("class_agnostic_nms"), "class_agnostic_nms"),
    )
