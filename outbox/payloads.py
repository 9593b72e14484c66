"""The calendar operations' payloads, as the schemas an enqueue is validated against.

These are the edge form of ``UPSERT_EVENT``, ``CANCEL_EVENT`` and ``REBUILD_ALL`` requests (JSON
or keyword arguments); ``operations.outbox.calendar_request`` turns a validated payload into the
checked ``Request`` with the rules the models cannot say alone (aware datetimes, dates not
mixed with datetimes, IANA zones, no NUL). The calendar kinds declare them in the registry
(``kinds.calendar``).

Invariants: unknown fields are refused (a typo must not silently drop content); errors never
echo the input (it may be an application's private data); versions fit a bigint.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from outbox.model import DEFAULT_CALENDAR, MAX_VERSION

_STRICT = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _bound(value: object) -> object:
    """An ISO string as the date or datetime it spells (pydantic alone would read a midnight
    datetime as a date, or a date as a midnight datetime)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be an ISO 8601 date or date-time") from None
    return value


Bound = Annotated[date | datetime, BeforeValidator(_bound)]


class CalendarPayload(BaseModel):
    """What every calendar operation names: the workspace and the target calendar."""

    model_config = _STRICT

    workspace_id: str = Field(min_length=1)
    calendar_id: str = Field(default=DEFAULT_CALENDAR, min_length=1)


class SourcePayload(CalendarPayload):
    """A write about one source, at one of its versions."""

    source_type: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    event_type: str = Field(min_length=1)
    version: int = Field(ge=0, le=MAX_VERSION)


class UpsertEventPayload(SourcePayload):
    """UPSERT_EVENT: the source's event must say exactly this (a full replacement)."""

    title: str = Field(min_length=1)
    # A date is an all-day bound (end exclusive), a datetime a timed one: "2026-05-01" is a
    # date and "2026-05-01T00:00:00Z" a datetime, never the other way round.
    start: Bound
    end: Bound
    description: str | None = None
    time_zone: str | None = None


class CancelEventPayload(SourcePayload):
    """CANCEL_EVENT: the source's event must be gone as of ``version``."""


class RebuildAllPayload(CalendarPayload):
    """REBUILD_ALL: delete every event of the workspace in the calendar and create it anew."""
