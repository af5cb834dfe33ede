"""Keep credentials out of logs, error messages and reprs.

Credentials enter the process in one place, :class:`vlm_lake.store.object_store.StoreSettings`,
which registers them here. From then on:

- :func:`redact` replaces every registered value (and the ``user:password@`` part of any
  URL) in a text; the object store runs every error message it raises through it.
- :func:`install_log_redaction` makes every log record created in this process go through
  :func:`redact`, whichever library logs it. This matters: with DEBUG logging on, py4j logs
  each command it sends to the JVM, including the Lance storage options handed to Spark's
  data source (secret key included), and botocore logs the ``Authorization`` header
  (access key id included).
- :func:`mask_fields` masks credential fields in ``repr`` arguments (pydantic models).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

#: What a secret is replaced with.
MASK = "***"

#: Values shorter than this are not registered: replacing every occurrence of a very short
#: string would garble logs, and no real credential is that short.
MIN_SECRET_LENGTH = 6

#: Lance/object_store storage option keys whose values are credentials.
SECRET_OPTION_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "token",
    }
)

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_installed = False


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a credential to redact from now on (None/short are ignored)."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value not in _secrets:
            _secrets = _secrets | {value}


def redact(text: str) -> str:
    """Return ``text`` with every registered credential and URL password masked.

    Args:
        text: Any text: an error message, a log line, a repr.

    Returns:
        The text with each registered secret replaced by :data:`MASK`, and
        ``scheme://user:password@`` in URLs replaced by ``scheme://***@``.
    """
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no partial leftovers
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return text


def redact_options(options: Mapping[str, str]) -> dict[str, str]:
    """A copy of storage options that is safe to log: credential values masked."""
    return {k: (MASK if k.lower() in SECRET_OPTION_KEYS and v else v) for k, v in options.items()}


def mask_fields(
    pairs: Iterable[tuple[str | None, Any]], names: Iterable[str]
) -> Iterator[tuple[str | None, Any]]:
    """Mask the values of the fields called ``names`` in ``(name, value)`` repr pairs.

    Meant for pydantic's ``__repr_args__``, so that ``repr()`` and ``str()`` of a resource
    show that a credential is set without showing it.
    """
    hidden = set(names)
    for name, value in pairs:
        yield name, (MASK if name in hidden and value else value)


def install_log_redaction() -> None:
    """Redact registered credentials from every log record created in this process.

    Wraps the logging module's record factory (once; later calls do nothing), so records
    from any library are covered, whichever handler later receives them. Only records that
    pass their logger's level are built, so the cost is one substring scan per emitted
    record while secrets are registered.
    """
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _secrets:
                _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        # Arguments that do not match the format: logging reports that itself when the
        # record is formatted; redact the raw parts instead.
        record.msg, record.args = redact(f"{record.msg} (args: {record.args!r})"), None
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
