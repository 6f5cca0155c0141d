"""Small helpers on ``supervision.Detections`` that keep the types exact."""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import supervision as sv

__all__ = ["copy_detections", "select"]


def select(
    detections: sv.Detections, which: npt.NDArray[np.bool_] | npt.NDArray[np.int_]
) -> sv.Detections:
    """The detections picked by a boolean mask or an index array (a new object)."""
    return cast(sv.Detections, detections[which])


def copy_detections(detections: sv.Detections) -> sv.Detections:
    """A shallow copy whose arrays (tracker ids included) can be replaced freely."""
    return select(detections, np.arange(len(detections)))
