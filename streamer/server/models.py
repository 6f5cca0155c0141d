"""The model contract of the local server, and the registry of built-in model ids."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError, ModelError

__all__ = [
    "TASK_CLASSIFICATION",
    "TASK_INSTANCE_SEGMENTATION",
    "TASK_KEYPOINTS",
    "TASK_OBJECT_DETECTION",
    "InferenceParams",
    "Model",
    "ModelRegistry",
    "Weights",
    "default_models_dir",
]

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

# Task names as Roboflow's inference server and SDK spell them.
TASK_OBJECT_DETECTION = "object-detection"
TASK_INSTANCE_SEGMENTATION = "instance-segmentation"
TASK_KEYPOINTS = "keypoint-detection"
TASK_CLASSIFICATION = "classification"

MODELS_DIR_ENV = "STREAMER_MODELS_DIR"


@dataclass(frozen=True, kw_only=True)
class InferenceParams:
    """Thresholds as fractions in [0, 1]; the HTTP layer converts 0-100 scales."""

    confidence: float = 0.4
    overlap: float = 0.3
    max_detections: int = 300
    class_agnostic_nms: bool = False


class Model(Protocol):
    """A model answering one model id. ``infer`` must be safe to call from many threads."""

    task_type: str
    input_size: int  # the long side the model works at; clients shrink frames to it

    def infer(self, image: Image, params: InferenceParams) -> dict[str, Any]:
        """Return the response body without ``time``, ``image`` and ids.

        Detections are ``{"predictions": [{x, y, width, height, class, class_id,
        confidence, ...}]}`` in pixels of ``image``; classification adds ``top``
        and ``confidence``.
        """
        ...


@dataclass(frozen=True)
class Weights:
    """A weights file the server may need, with where it comes from."""

    filename: str
    sha256: str
    url: str


def default_models_dir() -> Path:
    """``STREAMER_MODELS_DIR`` if set, else ``~/.cache/streamer/models``."""
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "streamer" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate_weights(weights: Weights, models_dir: Path, *, download: bool = False) -> Path:
    """Return the verified path of ``weights`` in ``models_dir``.

    Downloads from the public origin only when ``download`` is set (these
    machines are offline, and a silent fetch at start-up surprises people).
    """
    path = models_dir / weights.filename
    if not path.is_file():
        if not download:
            raise ModelError(
                f"weights {weights.filename} not found in {models_dir} "
                f"(set --models-dir or {MODELS_DIR_ENV}; with internet, "
                "`streamer serve --download-weights` fetches them)"
            )
        _download(weights, path)
    actual = _sha256(path)
    if actual != weights.sha256:
        raise ModelError(
            f"weights {path} have sha256 {actual}, expected {weights.sha256}: "
            "the file is corrupt or not the published one"
        )
    return path


def _download(weights: Weights, path: Path) -> None:
    import httpx

    log.info("downloading %s from %s", weights.filename, weights.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    try:
        with (
            httpx.stream("GET", weights.url, timeout=30, follow_redirects=True) as response,
            partial.open("wb") as handle,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes():
                handle.write(chunk)
    except (httpx.HTTPError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ModelError(f"cannot download {weights.filename}: {exc}") from exc
    partial.replace(path)


ModelFactory = Callable[[Path, bool], Model]


class ModelRegistry:
    """Model ids to lazily built models; a model that cannot load says why."""

    def __init__(self, models_dir: Path | None = None, *, download: bool = False) -> None:
        self.models_dir = models_dir if models_dir is not None else default_models_dir()
        self.download = download
        self._factories: dict[str, tuple[str, ModelFactory]] = {}
        self._loaded: dict[str, Model] = {}
        self._failed: dict[str, ModelError] = {}
        self._lock = threading.Lock()

    def register(self, model_id: str, task_type: str, factory: ModelFactory) -> None:
        if model_id.count("/") != 1:
            raise ConfigError(f"model id must look like project/version, got {model_id!r}")
        self._factories[model_id] = (task_type, factory)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._factories

    def ids(self) -> list[str]:
        return sorted(self._factories)

    def task_type(self, model_id: str) -> str:
        return self._factories[model_id][0]

    def get(self, model_id: str) -> Model:
        """The model for ``model_id``; ``KeyError`` if unknown, ``ModelError`` if it cannot load."""
        model = self._loaded.get(model_id)
        if model is not None:
            return model
        _, factory = self._factories[model_id]
        with self._lock:
            model = self._loaded.get(model_id)
            if model is not None:
                return model
            if model_id in self._failed:
                raise self._failed[model_id]
            try:
                model = factory(self.models_dir, self.download)
            except ModelError as exc:
                self._failed[model_id] = exc
                raise
            self._loaded[model_id] = model
            log.info("loaded model %s", model_id)
            return model

    def availability(self, model_id: str) -> str | None:
        """``None`` when ``model_id`` loads, else the reason it does not."""
        try:
            self.get(model_id)
        except ModelError as exc:
            return str(exc)
        return None


def builtin_registry(models_dir: Path | None = None, *, download: bool = False) -> ModelRegistry:
    """The registry of every built-in model id (coco/1 and the shapes family)."""
    from streamer.server import shapes, yolox

    registry = ModelRegistry(models_dir, download=download)
    registry.register("coco/1", TASK_OBJECT_DETECTION, yolox.load_coco)
    for model_id, task_type, factory in shapes.MODELS:
        registry.register(model_id, task_type, factory)
    return registry
