"""Run settings: one frozen dataclass, loaded from YAML and overridden by flags.

Unknown keys and wrong types are rejected with the key's name, so a typo in a
config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamer.errors import ConfigError

__all__ = ["RunConfig", "load_config"]

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
}


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

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source must not be empty")
        for name in ("model", "workflow", "workflow_output", "api_url", "api_key"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{name} must not be empty when given")
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


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Settings from the YAML file at ``path`` (if any), then ``overrides`` (flags given)."""
    values: dict[str, Any] = {}
    if path is not None:
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
        values.update(loaded)
        if isinstance(values.get("source"), str):
            values["source"] = _relative_to(Path(path).parent, values["source"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    hints = typing.get_type_hints(RunConfig)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(str(key) for key in set(values) - known)
    if unknown:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(
            f"unknown setting {_shown(unknown[0], 60)}{where} (known: {', '.join(sorted(known))})"
        )
    checked = {name: _check_type(name, value, hints[name]) for name, value in values.items()}
    if "source" not in checked:
        raise ConfigError("no source given (a file, a camera, a URL or synthetic:)")
    return RunConfig(**checked)


def _relative_to(folder: Path, source: str) -> str:
    """A relative file path in a config file means relative to the config file's folder
    (so a config works from any working directory); URLs, devices and ``synthetic:`` stay."""
    if "://" in source or source.startswith("synthetic:") or source.strip().isdigit():
        return source
    path = Path(source)
    if path.is_absolute() or source.startswith("/dev/"):
        return source
    return os.path.normpath(folder / path)
