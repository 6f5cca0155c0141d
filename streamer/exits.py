"""Exit codes of ``streamer run``, and which error gives which.

0 done; 1 other error; 2 bad settings; 3 bad source; 4 key rejected (401/403/402);
5 unknown model; 6 API unreachable or failing; 7 an output could not be written or
shown; 130 SIGINT; 143 SIGTERM. With several cameras the run's code is the worst
camera's, in the order of ``SEVERITY``.
"""

from __future__ import annotations

from collections.abc import Iterable

from streamer.errors import (
    AuthError,
    ConfigError,
    InferenceError,
    ModelNotFound,
    PlanError,
    SinkError,
    SourceError,
)

__all__ = ["EXIT_CODES", "exit_code", "worst"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_AUTH = 4
EXIT_MODEL = 5
EXIT_API = 6
EXIT_OUTPUT = 7
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_CODES = {
    "ok": EXIT_OK,
    "error": EXIT_ERROR,
    "usage": EXIT_USAGE,
    "source": EXIT_SOURCE,
    "auth": EXIT_AUTH,
    "model": EXIT_MODEL,
    "api": EXIT_API,
    "output": EXIT_OUTPUT,
    "sigint": EXIT_SIGINT,
    "sigterm": EXIT_SIGTERM,
}
# Worst first: what needs a person's fix for every camera (settings, key, model) before
# what one camera's surroundings did (API, source, output).
SEVERITY = (
    EXIT_SIGTERM,
    EXIT_SIGINT,
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_AUTH,
    EXIT_MODEL,
    EXIT_API,
    EXIT_SOURCE,
    EXIT_OUTPUT,
    EXIT_OK,
)


def exit_code(error: BaseException) -> int:
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, SourceError):
        return EXIT_SOURCE
    if isinstance(error, AuthError | PlanError):
        return EXIT_AUTH
    if isinstance(error, ModelNotFound):
        return EXIT_MODEL
    if isinstance(error, InferenceError):
        return EXIT_API
    if isinstance(error, SinkError):
        return EXIT_OUTPUT
    return EXIT_ERROR


def worst(codes: Iterable[int]) -> int:
    """The code of the run from its cameras' codes (0 when there were none)."""
    found = set(codes)
    for code in SEVERITY:
        if code in found:
            return code
    return max(found, default=EXIT_OK)
