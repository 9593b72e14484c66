"""Structured logging (structlog + stdlib) where every rendered line has passed redaction.

Invariants:
- One handler on the root logger renders both structlog events and stdlib records (aiohttp,
  asyncpg, ...): exceptions are formatted to text first, then `redact_event` runs, then the
  JSON/console renderer. structlog events are redacted before they enter stdlib logging (so any
  other handler sees them redacted too); stdlib records are redacted in our formatter.
- Per-task fields (an actor's id and kind) live in one ContextVar, `log_context`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import IO, Any, Literal, Protocol

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from config.redact import redact_event

__all__ = [
    "LogFields",
    "bind_log_context",
    "configure_logging",
    "log_context",
    "merge_log_context",
]

# --------------------------------------------------------------------------- per-actor context


class LogFields(Protocol):
    """Anything with ``items()`` of (key, value) pairs: a Mapping, or an object such as an
    actor's cell that serves as its own log context without allocating a dict."""

    def items(self) -> Iterable[tuple[str, object]]: ...


# One ContextVar for all per-task fields: setting it once per actor task is cheap; binding
# several structlog contextvars per task (tens of thousands of tasks) is not.
log_context: ContextVar[LogFields | None] = ContextVar("log_context", default=None)


def bind_log_context(**fields: object) -> Token[LogFields | None]:
    """Add ``fields`` to this task's log context with a single ContextVar.set; returns its token."""
    current = log_context.get()
    merged = {**dict(current.items()), **fields} if current is not None else fields
    return log_context.set(merged)


def merge_log_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: merge `log_context` into the event; the event's own keys win."""
    ctx = log_context.get()
    if ctx is not None:
        for key, value in ctx.items():
            event_dict.setdefault(key, value)
    return event_dict


# --------------------------------------------------------------------------- setup


class _Handler(logging.StreamHandler[IO[str]]):
    """Stream handler whose error report cannot leak record arguments."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (stdlib name)
        # logging.Handler.handleError prints the record's msg and args, unredacted.
        with contextlib.suppress(Exception):
            sys.stderr.write(f"--- logging error in {record.name!r}; details withheld\n")


class _Mark:
    """Unforgeable marker: the event was redacted before it was handed to stdlib logging."""

    def __repr__(self) -> str:
        return "<redacted>"


_MARK_KEY, _MARK = "_redacted", _Mark()


def _redact_and_mark(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog-side step, so every stdlib handler (pytest, Sentry, ...) sees redacted events."""
    event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    event_dict = redact_event(logger, method, event_dict)
    event_dict[_MARK_KEY] = _MARK
    return event_dict


def _redact_unless_marked(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Formatter-side step: drop stdlib bookkeeping and redact what was not redacted upstream."""
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    if event_dict.pop(_MARK_KEY, None) is _MARK:
        return event_dict
    # Records of other libraries, or structlog configured by someone else: redact here.
    event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    return redact_event(logger, method, event_dict)


def _json_dumps(obj: Any, **_: Any) -> str:
    # Events are already plain data after redaction; anything else must not be repr()-ed unredacted.
    return orjson.dumps(obj, default=lambda _o: "[UNSERIALIZABLE]").decode()


def _renderer(fmt: Literal["json", "console"], stream: IO[str]) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_json_dumps)
    try:
        colors = stream.isatty()
    except Exception:
        colors = False
    return structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )


def configure_logging(
    level: str, fmt: Literal["json", "console"], *, stream: IO[str] | None = None
) -> None:
    """Route structlog and stdlib logging through one redacting handler writing to ``stream``."""
    level_no = logging.getLevelNamesMapping().get(level.upper())
    if level_no is None:
        raise ValueError(f"unknown log level {level!r}")
    out = stream if stream is not None else sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_log_context,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Exceptions are formatted to text before redaction so that tracebacks are redacted too.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[_redact_unless_marked, _renderer(fmt, out)],
    )
    handler = _Handler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            _redact_and_mark,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
