"""Masking secrets (API keys, URL credentials) and making foreign text safe to print.

``redact`` masks, in any text:
- the userinfo of URLs (``rtsp://admin:***@cam``, ``http://***@host`` for a bare
  token), a raw ``@`` inside a password included (everything up to the host's ``@``);
- query parameters whose names carry secrets (``api_key``, ``token``, ``password``,
  ``sig``, ``X-Amz-Credential``, ...), case-insensitive;
- ``Bearer`` tokens, and any secret passed in explicitly.

``clean`` turns text from servers and sources into one printable line: escape
sequences and control characters removed, whitespace collapsed, cut to a length.
"""

from __future__ import annotations

import logging
import re
import unicodedata

__all__ = ["RedactingFilter", "clean", "install_log_redaction", "redact"]

_SECRET_WORDS = (
    "password|passwd|pwd|pass|secret|token|auth|apikey|api_key|key|signature|sig|credential"
)
_QUERY_SECRET = re.compile(rf"(?i)(?<![\w.-])([\w.-]*(?:{_SECRET_WORDS})[\w.-]*)=([^&\s\"'#<>]+)")
# scheme://userinfo@host: greedy up to the last '@' before the path, so a raw '@'
# inside a password is masked with the rest of it
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s?#\"'<>]*)@")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{user}:***@" if colon else f"{scheme}***@"


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with API keys, URL credentials and the given secrets masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    text = _QUERY_SECRET.sub(r"\1=***", text)
    return _BEARER.sub(r"\1 ***", text)


def clean(text: str, limit: int = 200) -> str:
    """One printable line: no escape sequences or control characters, at most ``limit``."""
    text = _ESCAPES.sub("", text)
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in text
        if unicodedata.category(ch) != "Cf"  # bidi overrides and other invisible formatting
    )
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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
