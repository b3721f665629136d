"""Logging that never lets a secret through.

Two layers: a registry of the exact secret strings this process has seen
(registered where a secret is decrypted or generated) and patterns for the
shapes secrets take on the wire (PVE API tokens, tickets, CSRF tokens,
``password=...``, private key blocks, URL passwords).  Both are applied to
the fully formatted message, the exception text and the stack text, so the
``%``-arguments of a call and the traceback of ``log.exception`` are covered.
The same redaction is available as :func:`redact` for events and exception
messages.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from provisioner.errors import ConfigError

REDACTED = "[REDACTED]"

# proxmoxer logs request bodies (passwords, tickets) at INFO; the others are
# chatty at INFO/DEBUG and echo headers or packets.
NOISY_LOGGERS = ("proxmoxer", "urllib3", "requests", "asyncssh")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_PRIVATE_KEY_BLOCK = re.compile(
    # An unterminated block (a truncated log line) is redacted to the end.
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(?:.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----)|.*)",
    re.DOTALL,
)
# PVEAPIToken=USER@REALM!TOKENID=SECRET: keep who, hide the secret.
_PVE_API_TOKEN = re.compile(r"(PVEAPIToken[=\s]+[^\s=!]+![^\s=]+=)([^\s\"',;&]+)", re.IGNORECASE)
# scheme://user:password@host (DATABASE_URL, REDIS_URL, proxies).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(@)", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic)(\s+)([A-Za-z0-9._~+/=-]{8,})")
# key=value, key: value, "key": "value", 'key': 'value' for secret-ish keys.
# `\w*token` also covers CSRFPreventionToken and USER@REALM!TOKENID=SECRET.
_KEY_VALUE = re.compile(
    r"""(?P<key>["']?\b(?:\w*password|\w*passwd|\w*secret|\w*token|ticket|pveauthcookie)["']?)"""
    r"""(?P<sep>\s*[=:]\s*)"""
    r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<bare>[^\s"'&,;)}\]]+))""",
    re.IGNORECASE,
)


def _key_value_sub(match: re.Match[str]) -> str:
    key, sep = match.group("key"), match.group("sep")
    if match.group("dq") is not None:
        return f'{key}{sep}"{REDACTED}"'
    if match.group("sq") is not None:
        return f"{key}{sep}'{REDACTED}'"
    if REDACTED[:-1] in match.group("bare"):  # already redacted by an earlier layer
        return match.group(0)
    return f"{key}{sep}{REDACTED}"


_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (_PRIVATE_KEY_BLOCK, lambda m: f"{m.group(1)}{REDACTED}{m.group(2) or ''}"),
    (_PVE_API_TOKEN, rf"\g<1>{REDACTED}"),
    (_URL_PASSWORD, rf"\g<1>{REDACTED}\g<3>"),
    (_AUTH_HEADER, rf"\g<1>\g<2>{REDACTED}"),
    (_KEY_VALUE, _key_value_sub),
)


def redact_patterns(text: str) -> str:
    """Redact the well-known secret shapes in ``text`` (no registry).

    Args:
        text: Any text: a log line, an event message, an exception message.

    Returns:
        ``text`` with secret values replaced by ``[REDACTED]``.
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _variants(value: str, min_length: int) -> set[str]:
    """The forms a secret takes in logs: as is, URL- and JSON-encoded, and
    line by line for multi-line values such as private keys."""
    forms = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
    }
    if "\n" in value:
        forms.update(
            line.strip() for line in value.splitlines() if not line.strip().startswith("-----")
        )
    return {form for form in forms if len(form) >= min_length}


def _alternation(secrets: set[str]) -> re.Pattern[str]:
    # longest first, so that a secret containing another matches whole
    return re.compile("|".join(map(re.escape, sorted(secrets, key=len, reverse=True))))


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span replaced by REDACTED; overlapping spans (a
    secret of one pattern inside or across one of the other) as one."""
    if not spans:
        return text
    spans.sort()
    parts, pos = [], 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s < end:
            end = max(end, e)
            continue
        parts += [text[pos:start], REDACTED]
        pos, start, end = end, s, e
    parts += [text[pos:start], REDACTED, text[end:]]
    return "".join(parts)


class SecretRedactor(logging.Filter):
    """A logging filter that redacts registered secrets and secret patterns.

    The filter never drops a record: it rewrites ``msg`` to the redacted,
    fully formatted message (``args`` become empty), renders the exception
    into a redacted ``exc_text`` and clears ``exc_info`` so no handler can
    render the raw traceback again.  Install it on handlers (logger filters
    do not see records propagated from child loggers), or let
    :func:`setup_logging` do it.

    Args:
        min_length: Registered values shorter than this are ignored, so a
            short string cannot wipe out every log line that contains it.
    """

    RECENT_MAX = 64

    def __init__(self, *, min_length: int = 8) -> None:
        super().__init__()
        self.min_length = min_length
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        # Two patterns: one over the settled secrets, compiled again only
        # when RECENT_MAX new ones have come, and one over the recent ones
        # (small: cheap to compile at each registration).  A process that
        # registers thousands of secrets stays linear, not quadratic.
        self._settled: set[str] = set()
        self._recent: set[str] = set()
        self._patterns: tuple[re.Pattern[str], ...] = ()

    def register(self, value: str | None) -> bool:
        """Remember a secret so that it is redacted wherever it appears.

        Args:
            value: The secret (a password, token secret, private key).

        Returns:
            True if the value is (now) redacted, False if it was too short
            (or empty) to register.
        """
        if not value or len(value) < self.min_length:
            return False
        forms = _variants(value, self.min_length)
        with self._lock:
            if forms <= self._secrets:
                return True
            self._secrets |= forms
            self._recent |= forms - self._settled
            if len(self._recent) > self.RECENT_MAX:
                self._settled |= self._recent
                self._recent = set()
            self._patterns = tuple(_alternation(group) for group in (self._settled, self._recent)
                                   if group)  # fmt: skip
        return True

    def register_all(self, values: Iterable[str | None]) -> None:
        """Register several secrets (see :meth:`register`)."""
        for value in values:
            self.register(value)

    def redact(self, text: str) -> str:
        """Redact registered secrets, then secret patterns, in ``text``.

        Args:
            text: Any text.

        Returns:
            The text with every secret replaced by ``[REDACTED]``.
        """
        patterns = self._patterns  # one read: register() may swap it concurrently
        if patterns:
            text = _cut(text, [m.span() for p in patterns for m in p.finditer(text)])
        return redact_patterns(text)

    def redact_record(self, record: logging.LogRecord) -> None:
        """Rewrite a log record in place so that it carries no secret."""
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format must not raise into the caller
            message = f"{record.msg!s} [log arguments could not be formatted]"
        record.msg = self.redact(message)
        record.args = ()
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
            # Handlers such as rich's render exc_info themselves, unredacted.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drop it."""
        self.redact_record(record)
        return True


_TRACEBACK_FORMATTER = logging.Formatter()

# The process-wide registry: logging is process-global, and secrets are
# registered where they are decrypted (SecretBox) or generated.
DEFAULT_REDACTOR = SecretRedactor()


def register_secret(value: str | None) -> bool:
    """Register a secret with the process-wide redactor.

    Args:
        value: The secret.

    Returns:
        True if registered, False if too short or empty to register.
    """
    return DEFAULT_REDACTOR.register(value)


def redact(text: str, redactor: SecretRedactor | None = None) -> str:
    """Redact secrets in any text: events, exception messages, CLI output.

    Args:
        text: Any text.
        redactor: The registry to use; the process-wide one by default.

    Returns:
        The text with every known secret and secret pattern redacted.
    """
    return (redactor or DEFAULT_REDACTOR).redact(text)


class _RedactingRecordFactory:
    """Wraps the log record factory so every record is redacted at birth,
    including records bound for handlers that libraries add later (rq adds
    its own to ``rq.worker``) and that never see our handler filter."""

    def __init__(self, inner: Callable[..., logging.LogRecord], redactor: SecretRedactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        self.redactor.redact_record(record)
        return record


def setup_logging(
    level: int | str = logging.INFO, redactor: SecretRedactor | None = None
) -> SecretRedactor:
    """Configure root logging so that no secret is ever written.

    Adds a stderr handler if the root logger has none, installs the redactor
    on every root handler and on the log record factory, sets the root level
    and keeps noisy libraries (proxmoxer, urllib3, requests, asyncssh) at
    WARNING whatever the level.  Calling it again is harmless.

    Args:
        level: The root level, a number or a name such as ``"info"``.
        redactor: The redactor to install; the process-wide one by default.

    Returns:
        The installed redactor.

    Raises:
        ConfigError: ``level`` is not a known logging level.
    """
    redactor = redactor or DEFAULT_REDACTOR
    if isinstance(level, str):
        resolved = logging.getLevelName(level.strip().upper())
        if not isinstance(resolved, int):
            raise ConfigError(
                f"unknown log level {level!r}", hint="use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        level = resolved
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        stderr_handler = logging.StreamHandler(sys.stderr)
        stderr_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(stderr_handler)
    for handler in root.handlers:
        handler.addFilter(redactor)  # no-op if already there
    current = logging.getLogRecordFactory()
    if isinstance(current, _RedactingRecordFactory):
        current = current.inner  # replace our own wrapper instead of stacking
    logging.setLogRecordFactory(_RedactingRecordFactory(current, redactor))
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
        # proxmoxer sets levels on its module loggers; keep those quiet too.
        for child_name, child in list(logging.Logger.manager.loggerDict.items()):
            if child_name.startswith(f"{name}.") and isinstance(child, logging.Logger):
                child.setLevel(max(child.level, logging.WARNING))
    return redactor
