"""Keep secrets (API keys, tokens, passwords) out of log lines, exception messages and asset metadata.

Secrets are registered once per process when a client is built from them; everything that leaves the process as
text passes through `redact`. A process-wide registry, because the text that leaks a secret is rarely written by the
code that holds it: httpx logs request URLs, stamina logs the error it retries, Dagster records exception messages.
"""

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"

# Shorter values would redact ordinary words and digits; no real credential is this short.
MIN_SECRET_LENGTH = 6

# The loggers of the libraries our clients use, which format URLs and errors themselves.
LIBRARY_LOGGERS = ("httpx", "httpcore", "stamina", "urllib3")

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()


def register_secret(*values: str | None) -> None:
    """Redact these values (and their URL-encoded forms) from now on, in this process."""
    global _ordered
    forms = {
        form
        for value in values
        if value and len(value) >= MIN_SECRET_LENGTH
        for form in (value, quote(value, safe=""), quote_plus(value))
    }
    if not forms - _secrets:
        return
    with _lock:
        _secrets.update(forms)
        # Longest first, so a secret that contains another is replaced whole.
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings anywhere inside metadata: nested mappings, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record with its message already formatted and redacted, and redacts string extras.

    Attached to a logger it covers records logged there; attached to a handler it covers everything the handler
    writes, propagated records included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _ordered:
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set, so the traceback's messages are redacted too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for key, value in list(vars(record).items()):
            if key not in {"msg", "args", "exc_info"} and isinstance(value, str | tuple | list | Mapping):
                setattr(record, key, redact_value(value))
        return True


_FILTER = RedactingFilter()


def install_log_redaction(loggers: Iterable[str | logging.Logger] = LIBRARY_LOGGERS) -> None:
    """Attach the (one, shared) redacting filter to these loggers and to their handlers; idempotent."""
    for entry in loggers:
        logger = logging.getLogger(entry) if isinstance(entry, str) else entry
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
