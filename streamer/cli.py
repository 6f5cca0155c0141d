"""The ``streamer`` command: ``run``, ``serve`` and ``synth``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import re
import signal
import sys
import traceback
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from streamer import __version__
from streamer.errors import ConfigError, StreamerError, redact

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from exc
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:40]}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse that never echoes an unexpected argument's value: it may be a secret
    (``--apikey KEY`` mistyped, a second camera URL with its password)."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(_unexpected(extras))
        return parsed

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redact(message)[:300]}\n")


def _unexpected(extras: Sequence[str]) -> str:
    """Which arguments were not expected, naming flags but never showing values."""
    flags = [e.split("=", 1)[0] for e in extras if e.startswith("-") and len(e) > 1]
    values = len(extras) - len(flags)
    parts = []
    if flags:
        parts.append("unrecognized option" + ("s " if len(flags) > 1 else " ") + " ".join(flags))
    if values:
        parts.append(
            f"{values} unexpected value{'s' if values > 1 else ''} (not shown: it may be a "
            "secret; sources come before the options, and quote arguments with spaces)"
        )
    return "; ".join(parts)


_EXIT_CODES_HELP = """exit codes:
  0    done
  1    other error
  2    bad settings or arguments
  3    bad source (cannot be opened, or no frame within --connect-timeout)
  4    API key rejected (401/403/402)
  5    unknown model
  6    API unreachable or failing (every frame sent failed, or more than --max-failed;
       a 429 asking to wait past --max-retry-wait)
  7    an output could not be written or shown (disk full, broken pipe, no display)
  130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM: outputs finalized first"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamer",
        description="Real-time video to detections over Roboflow-compatible inference APIs.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the local Roboflow-compatible inference server",
        description="Run the local Roboflow-compatible inference server (models: coco/1, "
        "shapes/1, shapes-seg/1, shapes-pose/1, shapes-cls/1).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=9001, help="port (default 9001; 0 = any)")
    serve.add_argument(
        "--models-dir",
        type=Path,
        help="folder holding yolox_nano.onnx "
        "(default $STREAMER_MODELS_DIR, else ~/.cache/streamer/models)",
    )
    serve.add_argument(
        "--download-weights",
        action="store_true",
        help="download missing weights from their public origin (checked by sha256)",
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("STREAMER_SERVER_API_KEY"),
        help="require this key on every request (default $STREAMER_SERVER_API_KEY; none)",
    )
    serve.add_argument(
        "--allow-image-urls",
        action="store_true",
        help="let requests name an image URL for the server to fetch (off: SSRF risk)",
    )
    serve.add_argument(
        "--workers", type=int, default=0, help="inference threads (0 = one per core)"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (keys masked)")
    faults = serve.add_argument_group("fault injection (deterministic under --seed)")
    faults.add_argument("--latency-ms", type=_non_negative_float, default=0.0, help="added latency")
    faults.add_argument(
        "--jitter-ms", type=_non_negative_float, default=0.0, help="latency +- this"
    )
    faults.add_argument("--error-rate", type=_fraction, default=0.0, help="fraction answered 5xx")
    faults.add_argument(
        "--error-status",
        type=int,
        choices=(500, 502, 503, 504),
        default=500,
        help="status of injected errors",
    )
    faults.add_argument(
        "--rate-limit", type=_positive_float, help="requests/s before 429 + Retry-After"
    )
    faults.add_argument(
        "--burst", type=_positive_float, help="token bucket size (default max(1, rate))"
    )
    faults.add_argument("--hang-rate", type=_fraction, default=0.0, help="fraction never answered")
    faults.add_argument(
        "--max-concurrency", type=int, help="503 beyond this many requests in flight"
    )
    faults.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")

    synth = commands.add_parser(
        "synth",
        help="write a synthetic video of moving shapes with ground truth",
        description="Write an H.264 video of coloured shapes moving on known paths.",
    )
    synth.add_argument("output", type=Path, metavar="OUT.mp4")
    synth.add_argument(
        "--truth", type=Path, metavar="OUT.json", help="write per-frame ground truth"
    )
    synth.add_argument("--size", type=_size, default=(1280, 720), help="WIDTHxHEIGHT (1280x720)")
    synth.add_argument("--fps", type=_positive_float, default=30.0)
    synth.add_argument("--seconds", type=_positive_float, default=10.0)
    synth.add_argument("--objects", type=int, default=5)
    synth.add_argument("--seed", type=int, default=0)

    _add_run_parser(commands)
    _add_batch_parser(commands)

    return parser


def _threshold(text: str) -> float:
    """Confidence or overlap as Roboflow takes them: 0-100, or a fraction below 1."""
    value = _non_negative_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be 0-100 (or a fraction), got {text}")
    return value / 100 if value >= 1 else value


def _choice(*choices: str) -> object:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"choose one of {', '.join(choices)}, got {text[:40]!r}"
            )
        return text

    return parse


def _flag_type(item: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """How the command line reads a setting: from its type, or the parse it names.
    Ranges are the settings' own (checked once, in streamer.config)."""
    if item.metadata.get("parse") == "threshold":
        return _threshold
    hint = typing.get_type_hints(_group_of(item))[item.name]
    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = options[0]
    if typing.get_origin(kind) is typing.Literal:
        return _choice(*typing.get_args(kind))  # type: ignore[return-value]
    if kind is int:
        return int
    if kind is float:
        return _finite
    return str


def _group_of(item: dataclasses.Field[Any]) -> type[Any]:
    from streamer.config import GROUPS, SETTINGS

    return GROUPS[SETTINGS[item.name]]


def _flag_help(item: dataclasses.Field[Any]) -> str:
    text = str(item.metadata.get("help", ""))
    default = item.default
    if isinstance(default, int | float | str) and not isinstance(default, bool) and default != "":
        if item.metadata.get("parse") == "threshold":
            default = default * 100  # the flag's own scale
        text += f" ({default:g})" if isinstance(default, float) else f" ({default})"
    return text.replace("%", "%%")  # argparse formats help with %


def _add_setting_flags(
    command: argparse.ArgumentParser, skip: frozenset[str] = frozenset()
) -> None:
    """Every setting a flag, named, typed and explained once, in streamer.config; all
    default to None so that only the flags given override the --config file."""
    from streamer.config import settings_fields

    for item in settings_fields():
        flag = item.metadata.get("flag")
        if flag == "" or item.metadata.get("config_only") or item.name in skip:
            continue  # given as SOURCE, or in a config file only
        if isinstance(item.default, bool):
            command.add_argument(
                str(flag), dest=item.name, action="store_const", const=not item.default,
                default=None, help=_flag_help(item),
            )  # fmt: skip
            continue
        command.add_argument(
            str(flag or "--" + item.name.replace("_", "-")),
            dest=item.name,
            type=_flag_type(item),
            default=None,
            help=_flag_help(item),
        )


def _add_run_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    run = commands.add_parser(
        "run",
        help="turn a video, camera or stream into tracked, annotated detections",
        description="Run the pipeline on each SOURCE: a video file, a webcam (0, /dev/video0), "
        "rtsp:// rtmp:// http(s):// streams, an image folder, or synthetic:. Several "
        "sources (or a cameras: list in --config) run at once, sharing one API budget per "
        "key fairly; output paths take {camera}. With no --api-url and no key, the "
        "embedded local server answers (offline).",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="what to read, one or more (or source: / cameras: in --config)",
    )
    _add_setting_flags(run)
    run.add_argument("--config", type=Path, help="YAML settings (flags override them)")
    run.add_argument("--models-dir", type=Path, help="weights for the embedded server's coco/1")


# per camera or per run, and meaningless for files processed one by one in workers
_NOT_IN_BATCH = frozenset(
    {"name", "mode", "stall_timeout", "connect_timeout", "reconnect", "weight", "min_fps",
     "show", "render_fps", "progress", "web", "web_token", "preview_fps", "preview_width",
     "metrics_per_camera", "mqtt", "mqtt_topic", "mqtt_required", "ray_cpus"}
)  # fmt: skip


def _add_batch_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="annotate many recorded files, each once, over worker processes or a Ray cluster",
        description="Process every file the PATTERNs match (quote them: 'archive/**/*.mp4'), "
        "each once, as 'streamer run' does (one record per frame, in order), over --workers "
        "local processes or a Ray cluster (--ray), all sharing one API budget "
        "(--rate-limit). Output templates take {stem}, {name}, {parent}. A rerun skips "
        "files whose outputs all exist and redoes the others.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("patterns", nargs="+", metavar="PATTERN", help="files or glob patterns")
    batch.add_argument(
        "--workers", type=_positive_int, default=2, help="local worker processes (2)"
    )
    _add_setting_flags(batch, skip=_NOT_IN_BATCH)
    batch.add_argument("--config", type=Path, help="YAML settings (flags override them)")
    batch.add_argument("--models-dir", type=Path, help="weights for the embedded server's coco/1")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _batch(args: argparse.Namespace) -> int:
    import contextlib

    from streamer.batch import TEMPLATED, expand, plan, run_batch
    from streamer.config import load_fleet, settings_fields

    overrides = {
        item.name: getattr(args, item.name)
        for item in settings_fields()
        if item.name != "source" and hasattr(args, item.name)
    }
    files = expand(args.patterns)
    templates = {k: overrides.pop(k) for k in TEMPLATED}  # not paths yet: checked per file
    checked = load_fleet(args.config, overrides, [str(files[0])])  # settings checked once
    # a config file's per-camera and run-wide keys (show, web, ...) have no meaning here
    base = {k: v for k, v in checked.base.items() if k not in _NOT_IN_BATCH}
    ray_address = base.pop("ray", None)
    for key, template in templates.items():
        if template is not None:
            base[key] = template
    with contextlib.ExitStack() as stack:
        if base.get("api_url") is None and base.get("api_key") is None:
            if ray_address not in (None, "local"):
                raise ConfigError(
                    "--ray across machines needs --api-url (an inference server every node "
                    "reaches); the embedded one listens on 127.0.0.1 of this machine"
                )
            from streamer.server import ServerConfig, ServerThread

            server = stack.enter_context(
                ServerThread(ServerConfig(port=0, models_dir=args.models_dir))
            )
            base["api_url"] = server.url
            print(f"streamer: no API URL or key: using the embedded server at {server.url}",
                  file=sys.stderr)  # fmt: skip
        jobs = plan(files, base, budget_cap=base.get("rate_limit"))
        return run_batch(jobs, workers=args.workers, ray_address=ray_address)


def _run(args: argparse.Namespace) -> int:
    from streamer.config import load_fleet, settings_fields
    from streamer.run import run_safely

    overrides = {item.name: getattr(args, item.name, None) for item in settings_fields()}
    overrides.pop("source")
    if overrides["web_token"] is None:
        overrides["web_token"] = os.environ.get("STREAMER_WEB_TOKEN") or None
    if overrides["name"] is not None and len(args.sources) > 1:
        raise ConfigError("--name names one camera; give several in --config (cameras:)")
    settings = load_fleet(args.config, overrides, args.sources)
    return run_safely(
        settings,
        models_dir=args.models_dir,
        config_path=args.config,
        overrides=overrides,
        sources=list(args.sources),
        debug=args.debug,
    )


def _serve(args: argparse.Namespace) -> int:
    from streamer.server import FaultConfig, ServerConfig, serve
    from streamer.server.runner import is_loopback

    faults = FaultConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_rate=args.error_rate,
        error_status=args.error_status,
        rate_limit=args.rate_limit,
        burst=args.burst,
        hang_rate=args.hang_rate,
        max_concurrency=args.max_concurrency,
        seed=args.seed,
    )
    if args.workers < 0:
        raise ConfigError("--workers must be >= 0")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        models_dir=args.models_dir,
        download_weights=args.download_weights,
        api_key=args.api_key,
        allow_image_urls=args.allow_image_urls,
        workers=args.workers,
        faults=faults,
    )
    if args.models_dir is not None and not args.models_dir.is_dir():
        log.warning("--models-dir %s does not exist: coco/1 will be unavailable", args.models_dir)
    if not is_loopback(args.host):
        log.warning("listening on %s: reachable from other machines", args.host)
    serve(config, access_log=args.access_log)  # says "serving on" once it listens
    return EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from streamer.outputs import VIDEO_SUFFIXES
    from streamer.synth import Scene, write_video

    if args.output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(
            f"{args.output}: the video is H.264, which needs one of {' '.join(VIDEO_SUFFIXES)}"
        )
    width, height = args.size
    scene = Scene(width=width, height=height, fps=args.fps, objects=args.objects, seed=args.seed)
    count = write_video(args.output, scene, seconds=args.seconds, truth_path=args.truth)
    even = (width - width % 2, height - height % 2)  # H.264 in yuv420p needs even sizes
    resized = "" if even == (width, height) else f", cut from {width}x{height} to even sizes"
    print(
        f"wrote {count} frames ({even[0]}x{even[1]} @ {args.fps:g} fps{resized}) to {args.output}"
    )
    if args.truth:
        print(f"ground truth in {args.truth}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C stops streamer at every moment of its life (a run finalizes its outputs
    # first). A job started in the background by a script inherits SIGINT ignored, which
    # left start-up deaf to it while the run itself, with its own handler, was not.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the command installed its own handling
        return EXIT_INTERRUPTED


class _UserFormatter(logging.Formatter):
    """``streamer: warning: ...``, one line, secrets masked, for people, not log files."""

    def format(self, record: logging.LogRecord) -> str:
        from streamer.redaction import clean

        message = redact(record.getMessage())
        return f"streamer: {record.levelname.lower()}: {clean(message, 400)}"


def _setup_logging(debug: bool, quiet: bool) -> None:
    handler = logging.StreamHandler()
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_UserFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    # One line per request is noise at INFO; --debug brings it back.
    logging.getLogger("httpx").setLevel(logging.DEBUG if debug else logging.WARNING)
    # Libraries' own warnings (trackers, supervision, numpy) are not the user's business
    # unless debugging: they go to the log at debug level.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if debug else logging.ERROR)
    if not debug:
        warnings.simplefilter("ignore")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("QT_LOGGING_RULES", "*=false")  # Qt's chatter behind --show


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command in ("run", "batch") and not args.debug  # the progress line tells the state
    _setup_logging(args.debug, quiet)
    handlers = {"serve": _serve, "synth": _synth, "run": _run, "batch": _batch}
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except StreamerError as exc:
        if args.debug:
            traceback.print_exc()  # and still the same exit code
        print(f"streamer: error: {redact(str(exc))}", file=sys.stderr)
        if isinstance(exc, ConfigError):
            return EXIT_USAGE
        from streamer.run import exit_code

        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
