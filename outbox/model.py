"""The outbox's data: what an application asks for and what we recorded of our writes.

Plain frozen dataclasses shared by the SQL edge (``store.outbox``, ``store.bindings``), the pure
rules (``outbox.plan`` and friends) and the account actor. No I/O here.

Invariants:
- a source is identified by ``SourceKey`` (workspace, source type, source id, event type) within
  one account; one source has at most one binding, hence at most one provider event;
- versions are per source and only grow in meaning: a lower version than one already applied
  is stale and is skipped, never written;
- an upsert carries its full intended content (title, timing, description): a later upsert
  replaces an earlier one entirely, which is what lets consecutive upserts merge;
- a binding's id never changes; its ``generation`` goes up each time its provider event must be
  created anew (Google never reuses a deleted event's id), and the provider-side id or Graph
  ``transactionId`` of a create derives from (binding id, generation) alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from providers.models import EventTiming

MAX_VERSION = 2**63 - 1  # a source version is a bigint
DEFAULT_CALENDAR = "primary"  # where a write goes when the request names no calendar


class Operation(enum.Enum):
    """What an outbox item asks for."""

    UPSERT_EVENT = "UPSERT_EVENT"  # create or update the event bound to a source
    CANCEL_EVENT = "CANCEL_EVENT"  # delete the event bound to a source
    REBUILD_ALL = "REBUILD_ALL"  # for a workspace and calendar: delete every bound event, recreate


class ItemState(enum.Enum):
    """Where an outbox item stands."""

    PENDING = "pending"  # to do (maybe after ``next_attempt_at``)
    DONE = "done"  # the provider matches it (or matched something newer)
    SKIPPED = "skipped"  # stale: a newer version of its source was already applied or queued
    DEAD_LETTER = "dead_letter"  # failed ``max_attempts`` times; kept with its last error


class BindingState(enum.Enum):
    """Where a binding's provider event stands."""

    CREATING = "creating"  # recorded before the create call: the outcome may be unknown
    LIVE = "live"  # the provider event exists as we last wrote it (``etag``)
    DELETED = "deleted"  # we deleted it, or a direct GET answered 404/410


class ConflictPolicy(enum.Enum):
    """What an upsert does when the provider's copy changed since our last write."""

    LOCAL_WINS = "local_wins"  # overwrite the user's edit (the default; it was reported inbound)
    PROVIDER_WINS = "provider_wins"  # keep the user's edit; the item is done without a write
    RECORD = "record"  # write nothing, record a conflict row for the application


@dataclass(frozen=True, slots=True)
class SourceKey:
    """The application object an event stands for, within one account."""

    workspace_id: str
    source_type: str
    source_id: str
    event_type: str  # e.g. BLOCKER_DEADLINE


@dataclass(frozen=True, slots=True)
class EventContent:
    """What an upsert wants the provider event to say."""

    title: str
    timing: EventTiming
    description: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One row of the outbox as the actor reads it."""

    id: int
    account_id: UUID
    operation: Operation
    workspace_id: str
    calendar_id: str  # the target calendar (provider id; "primary" for the default one)
    source: SourceKey | None  # None for REBUILD_ALL
    version: int
    content: EventContent | None  # UPSERT_EVENT only
    state: ItemState = ItemState.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """A source's provider event, as we last wrote it."""

    id: UUID
    account_id: UUID
    source: SourceKey
    calendar_id: str
    generation: int
    state: BindingState
    provider_event_id: str | None  # None until a create's outcome is known
    etag: str | None  # Google etag / Graph changeKey returned by our last write
    # Version of the last item applied: an upsert the provider matches, or a cancel (a cancelled
    # source keeps its deleted binding as a tombstone, so an older upsert arriving late is stale).
    applied_version: int | None
    content: EventContent | None  # content of that upsert (REBUILD_ALL recreates from it)
