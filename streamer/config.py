"""Run settings: a tree of frozen dataclasses per camera, from YAML and flags.

::

    RunConfig ─┬─ capture: CaptureSettings   source, name, mode, timeouts, reconnect
               ├─ target:  TargetSettings    model/workflow, API URL and key, thresholds, upload
               ├─ sender:  SenderSettings    in flight, deadline, timeouts, retries, rate limit
               ├─ sampler: SamplerSettings   max_fps, every, motion gate, weight, min_fps
               ├─ outputs: OutputSettings    video, JSON lines, events, webhook, window, HUD
               ├─ analytics: AnalyticsSettings counting lines, zones, track reports
               └─ run:     RunSettings       the whole run's: progress, control API

Each leaf is written once, with ``setting()``: its default, its help and its range.
The YAML keys and the ``streamer run`` flags are the leaves' names (``max_fps``,
``--max-fps``), derived from the fields, and each group checks itself when built.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamer.analytics import LineSpec, ZoneSpec, parse_lines, parse_zones
from streamer.errors import ConfigError

__all__ = [
    "RUN_WIDE",
    "CaptureSettings",
    "FleetConfig",
    "OutputSettings",
    "RunConfig",
    "RunSettings",
    "SamplerSettings",
    "SenderSettings",
    "TargetSettings",
    "camera_config",
    "load_config",
    "load_fleet",
    "settings_fields",
]

Mode = Literal["live", "recorded"]
Reconnect = Literal["after-start", "forever"]
KeyTransport = Literal["query", "header", "both"]
WebhookPayload = Literal["records", "events", "both"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_allowed: bool = False,
    flag: str | None = None,
    parse: str | None = None,
    config_only: bool = False,
) -> Any:
    """A settings field: its default, its help (the flag's and the docs'), its range
    (every number is also refused when it is not finite), and how the command line
    spells and reads it (``flag``: e.g. ``--no-hud``; ``parse``: ``threshold``;
    ``config_only``: no flag, a structure only a config file can hold)."""
    return field(
        default=default,
        metadata={
            "help": help,
            "range": None if low is None else (low, high, low_allowed),
            "flag": flag,
            "parse": parse,
            "config_only": config_only,
        },
    )


def check_range(name: str, value: float, bounds: tuple[float, float | None, bool]) -> None:
    """``ConfigError`` naming ``name`` unless ``value`` is finite and within ``bounds``."""
    low, high, low_allowed = bounds
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if value < low or (value == low and not low_allowed):
        raise ConfigError(f"{name} must be {'>=' if low_allowed else '>'} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be at most {high:g}, got {value:g}")


def _validate(settings: Any) -> None:
    """The checks every group shares: ranges from the fields, strings not blank."""
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        bounds = item.metadata.get("range")
        if bounds is not None and value is not None:
            check_range(item.name, value, bounds)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{item.name} must not be empty when given")


@dataclass(frozen=True, kw_only=True)
class CaptureSettings:
    """The camera: its source, name and how it is read (``CaptureConfig`` comes from it)."""

    source: str = setting("", "what to read", flag="")
    name: str | None = setting(
        None, "the camera's name in records, logs and {camera} paths (default: from the source)"
    )
    mode: Mode | None = setting(
        None, "live or recorded (default: files recorded, cameras and streams live)"
    )
    stall_timeout: float = setting(
        5.0, "seconds without a frame before reconnecting", low=0, high=86_400
    )
    connect_timeout: float = setting(
        20.0,
        "seconds a source may take to deliver its first frame before it fails (exit 3)",
        low=0,
        high=86_400,
    )
    reconnect: Reconnect = setting(
        "after-start",
        "after-start: a source that never delivered a frame fails after --connect-timeout, "
        "one that streamed reconnects forever; forever: keep trying from the start "
        "(cameras that come up later)",
    )

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source must not be empty")
        _validate(self)
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ConfigError(
                "camera name must be 1-64 letters, digits, '_', '.' or '-', "
                f"got {_shown(self.name)}"
            )
        if self.mode is not None and self.mode not in ("live", "recorded"):
            raise ConfigError(f"mode must be live or recorded, got {_shown(self.mode)}")


@dataclass(frozen=True, kw_only=True)
class TargetSettings:
    """What answers and how frames are uploaded (``Target`` and the client come from it)."""

    model: str | None = setting(
        None, "model id project/version (embedded server: coco/1, shapes/1 for synthetic:)"
    )
    workflow: str | None = setting(None, "workflow workspace/workflow_id instead of a model")
    workflow_output: str = setting("predictions", "workflow output holding the predictions")
    api_url: str | None = setting(
        None,
        "inference API base URL (default: serverless.roboflow.com with a key, else the "
        "embedded local server)",
    )
    api_key: str | None = setting(
        None, "Roboflow API key; safer: set $ROBOFLOW_API_KEY (a flag shows in ps)"
    )
    api_key_transport: KeyTransport = setting(
        "query",
        "how the key travels: query (api_key=, as the SDK), header (Authorization: Bearer; "
        "keeps it out of URLs and proxy logs; inference servers 1.5+), or both",
    )
    confidence: float = setting(
        0.4,
        "confidence threshold: 1 to 100 is a percentage (1 = 1%), below 1 a fraction (0.99 = 99%)",
        low=0,
        high=1,
        low_allowed=True,
        parse="threshold",
    )
    overlap: float = setting(
        0.3, "NMS overlap threshold, read like --confidence", low=0, high=1, low_allowed=True,
        parse="threshold",
    )  # fmt: skip
    max_side: int = setting(640, "long side of uploaded frames in pixels", low=0, high=8192)
    jpeg_quality: int = setting(80, "JPEG quality of uploads", low=10, high=100, low_allowed=True)

    def __post_init__(self) -> None:
        _validate(self)
        if self.model and self.workflow:
            raise ConfigError("give --model or --workflow, not both")
        if self.workflow is not None and self.workflow.count("/") != 1:
            raise ConfigError(
                f"workflow must look like workspace/workflow_id, got {_shown(self.workflow)}"
            )


@dataclass(frozen=True, kw_only=True)
class SenderSettings:
    """How requests go out (``SenderConfig`` comes from it)."""

    max_in_flight: int = setting(8, "concurrent requests per camera", low=0, high=256)
    deadline: float | None = setting(
        2.0, "live: seconds after capture when a result is stale", low=0, high=3600
    )
    request_timeout: float = setting(
        10.0, "seconds for a whole request, connect to last byte", low=0, high=3600
    )
    rate_limit: float | None = setting(
        None,
        "requests/s cap per API key, shared by every camera (default: 20 on *.roboflow.com, "
        "else none)",
        low=0,
        high=100_000,
    )
    max_retries: int = setting(
        3, "retries per frame on 429/5xx/timeouts", low=0, high=100, low_allowed=True
    )
    max_retry_wait: float = setting(
        60.0,
        "the longest a camera waits on the API, seconds: a 429 with a longer Retry-After, "
        "or (recorded) every request failing for longer, ends it with exit 6",
        low=0,
        high=86_400,
        low_allowed=True,
    )
    max_failed: float = setting(
        1.0,
        "fraction of sent frames that may fail before the camera ends with exit 6 (1.0: only "
        "when every one failed)",
        low=0,
        high=1,
        low_allowed=True,
    )

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True, kw_only=True)
class SamplerSettings:
    """Which frames are sent, and this camera's part of a shared budget (``SamplerConfig``
    and the budget's weights come from it)."""

    max_fps: float | None = setting(
        None, "live: at most this many frames sent per second", low=0, high=1000
    )
    every: int = setting(
        1, "recorded: send every k-th frame, track the rest", low=0, high=1_000_000
    )
    motion_threshold: float | None = setting(
        None, "skip frames that differ less than this (0-255)", low=0, high=255, low_allowed=True
    )
    weight: float = setting(
        1.0, "this camera's part of a shared API budget against the others'", low=0, high=1000
    )
    min_fps: float = setting(
        0.0,
        "requests/s this camera gets first, when the budget allows",
        low=0,
        high=1000,
        low_allowed=True,
    )
    ray_cpus: float = setting(
        0.25,
        "--ray: the CPUs this camera takes on its node (Ray places cameras by them)",
        low=0,
        high=256,
    )

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True, kw_only=True)
class OutputSettings:
    """Where results go (the sinks come from it); paths take ``{camera}``."""

    output: str | None = setting(None, "write the annotated video here (H.264)")
    jsonl: str | None = setting(
        None, "write one JSON record per output frame here ('-' for stdout)"
    )
    webhook: str | None = setting(None, "POST batches of records to this URL")
    snapshots: str | None = setting(
        None,
        "write a JPEG of each track's best frame (its box drawn) into this folder; the "
        "path goes in the track_end event",
    )
    webhook_payload: WebhookPayload = setting(
        "records", "what the webhook gets: records, events (analytics) or both"
    )
    events: str | None = setting(
        None,
        "write the analytics events (lines crossed, zones entered and left, tracks) here, "
        "one JSON object a line ('-' for stdout)",
    )
    show: bool = setting(False, "show a window (q, Esc quit)", flag="--show")
    render_fps: float = setting(
        0.0,
        "live, with --output or --show: frames drawn per second, boxes predicted to each "
        "(0: every source frame)",
        low=0,
        high=1000,
        low_allowed=True,
    )
    hud: bool = setting(
        True, "no figures drawn on the frames (fps, latency, status)", flag="--no-hud"
    )

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True, kw_only=True)
class AnalyticsSettings:
    """Counting lines and zones (from the config file: name, points, classes, anchor,
    inertia; zones also loiter_seconds), and how often tracks are reported."""

    lines: tuple[LineSpec, ...] = setting((), "counting lines", config_only=True)
    zones: tuple[ZoneSpec, ...] = setting((), "zones", config_only=True)
    update_interval: float = setting(
        5.0, "seconds between two track_update events of one track", low=0, high=86_400
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", parse_lines(self.lines))
        object.__setattr__(self, "zones", parse_zones(self.zones))
        _validate(self)


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The whole run's, not one camera's: refused inside a ``cameras:`` entry."""

    progress: bool = setting(
        True, "no progress line on stderr (the summary line stays)", flag="--no-progress"
    )
    web: str | None = setting(
        None,
        "HOST:PORT: serve the control API there (cameras added, removed, paused over HTTP; "
        "stats); the run then lasts until a signal",
    )
    preview_fps: float = setting(
        10.0, "the web view's previews: JPEGs a second per camera, at most", low=0, high=60
    )
    preview_width: int = setting(
        640, "the web view's previews: pixels wide, at most", low=16, high=7680, low_allowed=True
    )
    ray: str | None = setting(
        None,
        "run on a Ray cluster: local (start one on this machine, 127.0.0.1), auto (the "
        "one 'ray start' made here) or its HOST:PORT; pip install 'streamer[cluster]'",
    )
    metrics_per_camera: bool = setting(
        False,
        "/metrics: a latency histogram per camera for every stage (about twice the lines); "
        "default: per camera for result age and round trip, per fleet for the others",
        flag="--metrics-per-camera",
    )
    mqtt: str | None = setting(
        None,
        "mqtt://[user:pass@]host[:1883] (mqtts:// for TLS): publish analytics events and "
        "counts there",
    )
    mqtt_topic: str = setting("streamer", "the MQTT topics' prefix")
    mqtt_required: bool = setting(
        False,
        "fail (exit 7) when the MQTT broker does not answer at start, instead of retrying",
        flag="--mqtt-required",
    )
    web_token: str | None = setting(
        None,
        "bearer token the control API requires (default $STREAMER_WEB_TOKEN; required "
        "unless --web binds a loopback address)",
    )

    def __post_init__(self) -> None:
        _validate(self)


GROUPS: dict[str, type[Any]] = {
    "capture": CaptureSettings,
    "target": TargetSettings,
    "sender": SenderSettings,
    "sampler": SamplerSettings,
    "outputs": OutputSettings,
    "analytics": AnalyticsSettings,
    "run": RunSettings,
}
# YAML key / flag name -> its group: one flat namespace, every name in one group.
SETTINGS: dict[str, str] = {
    item.name: group for group, kind in GROUPS.items() for item in dataclasses.fields(kind)
}
RUN_WIDE = frozenset(item.name for item in dataclasses.fields(RunSettings))


def settings_fields() -> list[dataclasses.Field[Any]]:
    """Every setting's field, group by group: what the flags and the docs are made from."""
    return [item for kind in GROUPS.values() for item in dataclasses.fields(kind)]


@dataclass(frozen=True)
class RunConfig:
    """One camera's settings, a tree of the stages' settings. YAML keys and flags are
    the leaves' names (``max_fps``, ``--max-fps``): ``from_flat`` and ``flat`` map
    between the two."""

    capture: CaptureSettings
    target: TargetSettings = field(default_factory=TargetSettings)
    sender: SenderSettings = field(default_factory=SenderSettings)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    outputs: OutputSettings = field(default_factory=OutputSettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    run: RunSettings = field(default_factory=RunSettings)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> RunConfig:
        """From flat settings (types checked already); each group validates its own."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        for key, value in values.items():
            groups[SETTINGS[key]][key] = value
        if "source" not in groups["capture"]:
            raise ConfigError("no source given (a file, a camera, a URL or synthetic:)")
        built = {name: GROUPS[name](**given) for name, given in groups.items()}
        return cls(**built)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        return {
            item.name: getattr(getattr(self, group), item.name)
            for group, kind in GROUPS.items()
            for item in dataclasses.fields(kind)
        }

    @property
    def source(self) -> str:
        return self.capture.source

    @property
    def name(self) -> str | None:
        return self.capture.name


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


_HINTS: dict[str, Any] = {
    name: hint for kind in GROUPS.values() for name, hint in typing.get_type_hints(kind).items()
}


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
    unknown = sorted(str(key) for key in set(values) - set(SETTINGS))
    if unknown:
        raise ConfigError(
            f"unknown setting {_shown(unknown[0], 60)}{where} "
            f"(known: {', '.join(sorted(SETTINGS))})"
        )
    return {name: _check_type(name, value, _HINTS[name]) for name, value in values.items()}


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
    def run(self) -> RunSettings:
        """The run-wide settings (``web``, ``progress``): every camera carries the same."""
        return self.cameras[0].run


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
    return RunConfig.from_flat(_checked({**base, **own}, where))


def _relative_to(folder: Path, source: str) -> str:
    """A relative file path in a config file means relative to the config file's folder
    (so a config works from any working directory); URLs, devices and ``synthetic:`` stay."""
    if "://" in source or source.startswith("synthetic:") or source.strip().isdigit():
        return source
    path = Path(source)
    if path.is_absolute() or source.startswith("/dev/"):
        return source
    return os.path.normpath(folder / path)
