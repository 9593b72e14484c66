"""Provider-neutral data the actor stores and acts on: plain frozen dataclasses.

Invariants:
- every datetime here is timezone-aware UTC; all-day events carry dates, never datetimes;
- an all-day event's ``end_date`` is exclusive (a one-day event on 5 May ends on 6 May);
- ``raw`` keeps the provider's JSON for consumers; nothing in the actor reads it;
- secrets (tokens, channel tokens) are excluded from ``repr``;
- ``binding_id`` marks an event we wrote (our binding's UUID in a private extended property);
  None means the provider did not return the property, not that the event is someone else's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


class EventStatus(enum.Enum):
    """An event's status as the provider reports it."""

    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """The result of a refresh: a new access token, and a rotated refresh token if one came."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    # The account's stable subject when the answer named it (a checked id_token, Entra's
    # client_info); None: ask ``CalendarProvider.identify`` if it matters.
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class CalendarInfo:
    """One calendar of an account."""

    id: str
    name: str
    primary: bool
    time_zone: str | None = None
    access_role: str | None = None
    synced: bool = True  # False: listed, but this provider cannot sync it (marked not_synced)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class EventTiming:
    """When an event happens: dates for all-day events, UTC instants for timed ones."""

    all_day: bool
    start_date: date | None = None
    end_date: date | None = None  # exclusive
    start_at: datetime | None = None  # UTC
    end_at: datetime | None = None  # UTC
    time_zone: str | None = None  # the source zone of a timed event (IANA), when known

    def __post_init__(self) -> None:
        if self.all_day:
            if self.start_date is None or self.end_date is None:
                raise ValueError("an all-day event needs start_date and end_date")
            if self.end_date <= self.start_date:
                raise ValueError("an all-day event ends after it starts (end is exclusive)")
        else:
            if self.start_at is None or self.end_at is None:
                raise ValueError("a timed event needs start_at and end_at")
            if self.start_at.utcoffset() is None or self.end_at.utcoffset() is None:
                raise ValueError("timed events use aware datetimes")
            if self.end_at < self.start_at:
                raise ValueError("a timed event cannot end before it starts")


@dataclass(frozen=True, slots=True)
class Event:
    """One event (an instance, for recurring series: singleEvents semantics)."""

    id: str
    calendar_id: str
    status: EventStatus
    timing: EventTiming
    title: str | None = None
    description: str | None = None
    location: str | None = None
    organizer_email: str | None = None
    attendees_count: int = 0
    etag: str | None = None
    ical_uid: str | None = None
    recurring_event_id: str | None = None  # the series this instance belongs to
    updated_at: datetime | None = None
    binding_id: str | None = None  # ours when set: the binding that wrote it
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class EventRemoval:
    """An event that left the calendar (or, for Graph, possibly only the sync window).

    ``definite`` is False when the provider's signal also means "left the window", so the
    stored copy goes but the event must not be assumed deleted at the provider.
    """

    id: str
    calendar_id: str
    definite: bool = True
    recurring_event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SyncWindow:
    """The time range a full sync covers (delta tokens encode it, so it changes only by resync)."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SetAside:
    """An item of a page that could not be read: kept with its raw JSON and why, while the page
    and its cursor advance. ``id`` is the provider's, when the item named one."""

    id: str | None
    reason: str
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One page of changes and where to go next: a cursor (more pages) or the new delta token.

    The caller commits the page's changes together with ``next_cursor`` or ``delta_token`` in one
    transaction, so a crash resumes from the last committed page: nothing lost, nothing applied
    twice. Exactly one of ``next_cursor`` and ``delta_token`` is set.
    """

    upserts: tuple[Event, ...]
    removals: tuple[EventRemoval, ...]
    next_cursor: str | None = None
    delta_token: str | None = None
    full_sync: bool = False  # the round started without a delta token (mark-and-sweep applies)
    set_aside: tuple[SetAside, ...] = ()  # items that could not be read

    def __post_init__(self) -> None:
        if (self.next_cursor is None) == (self.delta_token is None):
            raise ValueError("a sync page carries exactly one of next_cursor and delta_token")


@dataclass(frozen=True, slots=True)
class PushChannel:
    """A watch channel (Google) or subscription (Graph) delivering notifications to us."""

    id: str
    calendar_id: str
    resource_id: str | None
    expires_at: datetime | None
    token: str = field(repr=False)  # Google channel token / Graph clientState: random per channel
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class NotificationKind(enum.Enum):
    """What a verified notification asks of the actor."""

    SYNC = "sync"  # the channel is live (Google's first message); nothing changed
    CHANGED = "changed"  # something in the calendar changed: run an incremental sync
    RESYNC = "resync"  # notifications were missed: run a full resync (Graph ``missed``)
    REAUTHORIZE = "reauthorize"  # the subscription needs reauthorization (Graph lifecycle)
    REMOVED = "removed"  # the provider removed the channel/subscription: create a new one


@dataclass(frozen=True, slots=True)
class Notification:
    """A parsed, not yet verified, webhook notification."""

    kind: NotificationKind
    channel_id: str
    resource_id: str | None = None
    message_number: int | None = None
    token: str | None = field(default=None, repr=False)  # compared with the stored one


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event we write to a provider (outbox); timing follows ``EventTiming``'s rules."""

    title: str
    timing: EventTiming
    description: str | None = None
    location: str | None = None
    binding_id: str | None = None  # our binding's UUID, stored in a private extended property
