"""Run settings: one frozen dataclass, loaded from YAML and overridden by flags.

Unknown keys and wrong types are rejected with the key's name, so a typo in a
config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamer.errors import ConfigError

__all__ = ["RunConfig", "load_config"]

Mode = Literal["live", "recorded"]


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything ``streamer run`` needs. Times in seconds."""

    source: str
    model: str | None = None  # project/version
    workflow: str | None = None  # workspace/workflow_id
    workflow_output: str = "predictions"
    api_url: str | None = None  # None: the embedded local server when there is no key
    api_key: str | None = None
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
    request_timeout: float = 10.0
    motion_threshold: float | None = None
    stall_timeout: float = 5.0
    output: str | None = None  # annotated video
    jsonl: str | None = None  # file or "-"
    webhook: str | None = None
    show: bool = False
    hud: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("source must not be empty")
        if self.model and self.workflow:
            raise ConfigError("give --model or --workflow, not both")
        if self.workflow is not None and self.workflow.count("/") != 1:
            raise ConfigError(
                f"workflow must look like workspace/workflow_id, got {self.workflow!r}"
            )
        if self.mode is not None and self.mode not in ("live", "recorded"):
            raise ConfigError(f"mode must be live or recorded, got {self.mode!r}")
        positive = {
            "max_in_flight": self.max_in_flight,
            "every": self.every,
            "max_side": self.max_side,
            "request_timeout": self.request_timeout,
            "stall_timeout": self.stall_timeout,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        for name in ("max_fps", "deadline", "rate_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.max_in_flight > 256:
            raise ConfigError(f"max_in_flight must be at most 256, got {self.max_in_flight}")
        if self.max_side > 8192:
            raise ConfigError(f"max_side must be at most 8192, got {self.max_side}")
        for name in ("confidence", "overlap"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")


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
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is Literal:
        if value not in typing.get_args(annotation):
            allowed = ", ".join(map(str, typing.get_args(annotation)))
            raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
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
    values.update({k: v for k, v in overrides.items() if v is not None})
    hints = typing.get_type_hints(RunConfig)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(
            f"unknown setting {unknown[0]!r}{where} (known: {', '.join(sorted(known))})"
        )
    checked = {name: _check_type(name, value, hints[name]) for name, value in values.items()}
    if "source" not in checked:
        raise ConfigError("no source given (a file, a camera, a URL or synthetic:)")
    return RunConfig(**checked)
