"""What the calendar account actor is told: one frozen dataclass per message, and the one
constructor that turns a notification stream entry into one.

Invariants:
- a message is its own mailbox key: equal messages coalesce (a burst of ``Changed("a")`` costs
  one handling), so every field is part of what the message means, never a payload;
- the inbox entries a message covers travel beside it as the post's items, always
  ``cluster.inbox.InboxEntry``; they are acknowledged only after the commit that covers them;
- the stream's ``kind`` field is spelled here and in ``providers.models.NotificationKind`` (the
  gateway's vocabulary) only: the admin API writes ``SyncNow.stream_kind`` and
  ``PreferencesChanged.stream_kind``; an unknown kind reads as ``Changed`` (a sync is never
  wrong, a dropped notification is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cluster.inbox import InboxEntry
from providers.models import NotificationKind


@dataclass(frozen=True, slots=True)
class Changed:
    """Something in a calendar changed: an incremental sync of it."""

    calendar_id: str


@dataclass(frozen=True, slots=True)
class Resync:
    """Notifications of a calendar were missed (Graph ``missed``): a full round of it."""

    calendar_id: str


@dataclass(frozen=True, slots=True)
class ChannelRemoved:
    """The provider removed the calendar's channel: a new one, then a sync of what it missed."""

    calendar_id: str


@dataclass(frozen=True, slots=True)
class Reauthorize:
    """The provider asks for the channel to be reauthorized (Graph lifecycle)."""

    calendar_id: str


@dataclass(frozen=True, slots=True)
class SyncNow:
    """Sync every followed calendar (the admin API, a lost stream, a handed-back entry)."""

    stream_kind: ClassVar[str] = "sync-now"


@dataclass(frozen=True, slots=True)
class PreferencesChanged:
    """The account's sync preferences changed: reload them."""

    stream_kind: ClassVar[str] = "preferences"


@dataclass(frozen=True, slots=True)
class Resume:
    """New credentials were stored for a parked account: load it again and sync."""


@dataclass(frozen=True, slots=True)
class OutboxDue:
    """An outbox item of the account is due: write what is due."""


AccountMessage = (
    Changed
    | Resync
    | ChannelRemoved
    | Reauthorize
    | SyncNow
    | PreferencesChanged
    | Resume
    | OutboxDue
)

_BY_CALENDAR: dict[str, type[Changed | Resync | ChannelRemoved | Reauthorize]] = {
    NotificationKind.CHANGED.value: Changed,
    NotificationKind.RESYNC.value: Resync,
    NotificationKind.REMOVED.value: ChannelRemoved,
    NotificationKind.REAUTHORIZE.value: Reauthorize,
}
_WHOLE_ACCOUNT: dict[str, AccountMessage] = {
    SyncNow.stream_kind: SyncNow(),
    PreferencesChanged.stream_kind: PreferencesChanged(),
}


def message_of(entry: InboxEntry) -> AccountMessage:
    """The message a notification stream entry stands for."""
    whole = _WHOLE_ACCOUNT.get(entry.kind)
    if whole is not None:
        return whole
    return _BY_CALENDAR.get(entry.kind, Changed)(entry.calendar_id)
