"""Run settings: one frozen dataclass per camera, loaded from YAML and overridden by flags.

Unknown keys and wrong types are rejected with the key's name, so a typo in a
config file is an error, not a silently ignored setting.

Several cameras: the top-level keys are every camera's defaults, and each entry of
``cameras:`` overrides them for one camera (``name``, ``source`` and any setting but
the run-wide ones)::

    model: coco/1
    max_fps: 5
    jsonl: out/{camera}.jsonl
    cameras:
      - {name: door, source: rtsp://cam1/stream, weight: 2}
      - {name: aisle, source: aisle.mp4, mode: live, min_fps: 1}
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamer.errors import ConfigError

__all__ = ["RUN_WIDE", "FleetConfig", "RunConfig", "camera_config", "load_config", "load_fleet"]

Mode = Literal["live", "recorded"]
Reconnect = Literal["after-start", "forever"]
KeyTransport = Literal["query", "header", "both"]

# name: (lowest, highest, whether the lowest itself is allowed). Every number is also
# refused when it is not finite (.inf, .nan in YAML; inf on the command line).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_in_flight": (0, 256, False),
    "every": (0, 1_000_000, False),
    "max_side": (0, 8192, False),
    "jpeg_quality": (10, 100, True),
    "max_retries": (0, 100, True),
    "request_timeout": (0, 3600, False),
    "stall_timeout": (0, 86_400, False),
    "connect_timeout": (0, 86_400, False),
    "max_fps": (0, 1000, False),
    "deadline": (0, 3600, False),
    "rate_limit": (0, 100_000, False),
    "max_retry_wait": (0, 86_400, True),
    "max_failed": (0, 1, True),
    "confidence": (0, 1, True),
    "overlap": (0, 1, True),
    "motion_threshold": (0, 255, True),
    "weight": (0, 1000, False),
    "min_fps": (0, 1000, True),
}
# Settings of the whole run, not of one camera: refused inside ``cameras:`` entries.
RUN_WIDE = frozenset({"web", "web_token", "progress"})


def check_range(name: str, value: float) -> None:
    """``ConfigError`` naming ``name`` unless ``value`` is finite and in its range."""
    low, high, low_allowed = _RANGES[name]
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if value < low or (value == low and not low_allowed):
        raise ConfigError(f"{name} must be {'>=' if low_allowed else '>'} {low:g}, got {value:g}")
    if value > high:
        raise ConfigError(f"{name} must be at most {high:g}, got {value:g}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything ``streamer run`` needs. Times in seconds."""

    source: str
    name: str | None = None  # the camera's name in records, outputs, logs; default from source
    model: str | None = None  # project/version
    workflow: str | None = None  # workspace/workflow_id
    workflow_output: str = "predictions"
    api_url: str | None = None  # None: the embedded local server when there is no key
    api_key: str | None = None
    api_key_transport: KeyTransport = "query"
    mode: Mode | None = None  # None: files recorded, cameras and streams live
    max_in_flight: int = 8
    max_fps: float | None = None
    every: int = 1  # recorded: send every k-th frame, track the rest
    deadline: float | None = 2.0  # live: a result older than this is stale
    confidence: float = 0.4
    overlap: float = 0.3
    max_side: int = 640
    jpeg_quality: int = 80
    rate_limit: float | None = None  # requests/s per key; None: 20 on Roboflow's hosts, else none
    max_retries: int = 3
    max_retry_wait: float = 60.0  # a 429 asking for longer means the quota is spent
    max_failed: float = 1.0  # fraction of sent frames that may fail; 1.0: only all failing
    request_timeout: float = 10.0
    motion_threshold: float | None = None
    stall_timeout: float = 5.0
    connect_timeout: float = 20.0  # a source that never delivered a frame fails after this
    reconnect: Reconnect = "after-start"
    output: str | None = None  # annotated video
    jsonl: str | None = None  # file or "-"
    webhook: str | None = None
    show: bool = False
    hud: bool = True
    progress: bool = True
    weight: float = 1.0  # this camera's part of a shared API budget, against the others'
    min_fps: float = 0.0  # requests/s this camera gets first, when the budget allows
    web: str | None = None  # HOST:PORT of the control API
    web_token: str | None = None  # bearer token the control API requires

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source must not be empty")
        for name in ("model", "workflow", "workflow_output", "api_url", "api_key", "name"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{name} must not be empty when given")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise ConfigError(
                "camera name must be 1-64 letters, digits, '_', '.' or '-', "
                f"got {_shown(self.name)}"
            )
        if self.model and self.workflow:
            raise ConfigError("give --model or --workflow, not both")
        if self.workflow is not None and self.workflow.count("/") != 1:
            raise ConfigError(
                f"workflow must look like workspace/workflow_id, got {_shown(self.workflow)}"
            )
        if self.mode is not None and self.mode not in ("live", "recorded"):
            raise ConfigError(f"mode must be live or recorded, got {_shown(self.mode)}")
        for name in _RANGES:
            value = getattr(self, name)
            if value is not None:
                check_range(name, value)


def _shown(value: Any, limit: int = 200) -> str:
    """A value for an error message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation``, or ConfigError naming ``name``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(name, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {_shown(value)}")
    if origin is Literal:
        if value not in typing.get_args(annotation):
            allowed = ", ".join(map(str, typing.get_args(annotation)))
            raise ConfigError(f"{name} must be one of {allowed}, got {_shown(value)}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_shown(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {_shown(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {_shown(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {_shown(value)}")
        return value
    return value


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must be a mapping of settings")
    return loaded


def _checked(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` with unknown keys refused and each value converted to its field's type."""
    hints = typing.get_type_hints(RunConfig)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(str(key) for key in set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting {_shown(unknown[0], 60)}{where} (known: {', '.join(sorted(known))})"
        )
    return {name: _check_type(name, value, hints[name]) for name, value in values.items()}


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Settings from the YAML file at ``path`` (if any), then ``overrides`` (flags given)."""
    fleet = load_fleet(path, overrides)
    if len(fleet.cameras) != 1:
        raise ConfigError(f"{len(fleet.cameras)} cameras given where one was expected")
    return fleet.cameras[0]


@dataclass(frozen=True)
class FleetConfig:
    """The run's cameras, each a whole ``RunConfig``; ``base``: the settings all share
    (what a camera added later starts from)."""

    base: dict[str, Any]
    cameras: list[RunConfig]

    @property
    def run(self) -> RunConfig:
        """The run-wide settings (``web``, ``progress``): the first camera carries them."""
        return self.cameras[0]


def load_fleet(
    path: str | Path | None, overrides: dict[str, Any], sources: Sequence[str] = ()
) -> FleetConfig:
    """Every camera's settings: YAML defaults, then flags, then each ``cameras:`` entry
    (flags do not override a camera's own keys). ``sources`` given on the command line
    replace the file's cameras; none at all is an error."""
    values: dict[str, Any] = {}
    entries: list[Any] = []
    where = f" in {path}" if path is not None else ""
    if path is not None:
        values.update(_read_yaml(path))
        raw = values.pop("cameras", None)
        if raw is not None:
            if not isinstance(raw, list) or not raw:
                raise ConfigError(f"cameras{where} must be a list of cameras")
            entries = raw
        if isinstance(values.get("source"), str):
            values["source"] = _relative_to(Path(path).parent, values["source"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    base = _checked(values, where)
    if sources:
        entries = [{"source": source} for source in sources]
        base.pop("source", None)
    elif not entries:
        entries = [{}]
    cameras = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"camera {number}{where} must be a mapping (name:, source:, ...)")
        cameras.append(camera_config(base, entry, f"{where} (camera {number})", path))
    return FleetConfig(base, cameras)


def camera_config(
    base: dict[str, Any],
    entry: dict[str, Any],
    where: str = "",
    path: str | Path | None = None,
) -> RunConfig:
    """One camera's settings: ``base`` (checked already) with its own ``entry`` over it."""
    own = dict(entry)
    if isinstance(own.get("source"), str) and path is not None:
        own["source"] = _relative_to(Path(path).parent, own["source"])
    wide = sorted(RUN_WIDE & set(own))
    if wide:
        raise ConfigError(f"{wide[0]} is a setting of the whole run, not of a camera{where}")
    merged = {**base, **_checked(own, where)}
    if "source" not in merged:
        raise ConfigError("no source given (a file, a camera, a URL or synthetic:)")
    return RunConfig(**merged)


def _relative_to(folder: Path, source: str) -> str:
    """A relative file path in a config file means relative to the config file's folder
    (so a config works from any working directory); URLs, devices and ``synthetic:`` stay."""
    if "://" in source or source.startswith("synthetic:") or source.strip().isdigit():
        return source
    path = Path(source)
    if path.is_absolute() or source.startswith("/dev/"):
        return source
    return os.path.normpath(folder / path)
