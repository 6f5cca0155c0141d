"""Masking secrets (API keys, URL passwords) in text and in log records."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "install_log_redaction", "redact"]

_QUERY_SECRET = re.compile(r"(?i)\b(api_key|apikey|key|token|access_token)=([^&\s\"']+)")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):([^@/\s]+)@")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with API keys, URL passwords and the given secrets masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _QUERY_SECRET.sub(r"\1=***", text)
    text = _BEARER.sub(r"\1 ***", text)
    return _URL_PASSWORD.sub(r"\1:***@", text)


class RedactingFilter(logging.Filter):
    """Masks secrets in log records of a logger (httpx and uvicorn print full URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                redact(str(a)) if not isinstance(a, int | float) else a for a in args
            )
        record.msg = redact(str(record.msg))
        return True


def install_log_redaction(*logger_names: str) -> None:
    """Add one ``RedactingFilter`` to each named logger (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
