"""Event bindings: which provider event stands for an outbox source (``event_bindings``).

Invariants:
- one binding per source within an account (``SourceKey``); its id never changes;
- a binding is written before the provider call that creates its event (``begin_create``), so
  a create whose outcome was lost is retried under the same (id, generation);
- ``bump_generation`` is the only way back to ``creating`` from another state: it clears the
  provider event id and etag, because a provider never reuses a deleted event's id;
- ``mark_deleted`` keeps the provider event id, so the inbound echo of our delete is still ours;
- ``content`` is stored as jsonb with dates and datetimes as ISO 8601 strings, and reads back
  equal to the ``EventContent`` written.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID

import asyncpg
import orjson

from outbox.model import Binding, BindingState, EventContent, SourceKey
from providers.models import EventTiming
from store.db import Queryable

_COLUMNS = (
    "id, account_id, workspace_id, source_type, source_id, event_type, calendar_id, generation,"
    " state, provider_event_id, etag, applied_version, content"
)
_SOURCE_MATCH = "workspace_id = $2 AND source_type = $3 AND source_id = $4 AND event_type = $5"


def _encode_content(content: EventContent) -> str:
    """The jsonb text of an ``EventContent`` (flat, named like the outbox columns)."""
    timing = content.timing
    return orjson.dumps(
        {
            "title": content.title,
            "description": content.description,
            "all_day": timing.all_day,
            "start_date": _iso(timing.start_date),
            "end_date": _iso(timing.end_date),
            "start_at": _iso(timing.start_at),
            "end_at": _iso(timing.end_at),
            "time_zone": timing.time_zone,
        }
    ).decode()


def _iso(value: date | None) -> str | None:
    # datetime is a subclass of date: both keep their own isoformat (offset included).
    return None if value is None else value.isoformat()


def _decode_content(text: str | None) -> EventContent | None:
    """The ``EventContent`` of a jsonb text written by ``_encode_content``."""
    if text is None:
        return None
    data = cast(dict[str, Any], orjson.loads(text))

    def parsed(key: str, kind: type[date] | type[datetime]) -> Any:
        value = data.get(key)
        return None if value is None else kind.fromisoformat(value)

    timing = EventTiming(
        all_day=bool(data["all_day"]),
        start_date=parsed("start_date", date),
        end_date=parsed("end_date", date),
        start_at=parsed("start_at", datetime),
        end_at=parsed("end_at", datetime),
        time_zone=data.get("time_zone"),
    )
    return EventContent(title=data["title"], timing=timing, description=data.get("description"))


def _binding(record: asyncpg.Record) -> Binding:
    return Binding(
        id=record["id"],
        account_id=record["account_id"],
        source=SourceKey(
            workspace_id=record["workspace_id"],
            source_type=record["source_type"],
            source_id=record["source_id"],
            event_type=record["event_type"],
        ),
        calendar_id=record["calendar_id"],
        generation=record["generation"],
        state=BindingState(record["state"]),
        provider_event_id=record["provider_event_id"],
        etag=record["etag"],
        applied_version=record["applied_version"],
        content=_decode_content(record["content"]),
    )


def _required(record: asyncpg.Record | None, binding_id: UUID) -> Binding:
    if record is None:
        raise LookupError(f"no binding {binding_id}")
    return _binding(record)


async def get_binding(conn: Queryable, account_id: UUID, source: SourceKey) -> Binding | None:
    """The binding of ``source`` in the account, or None."""
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM event_bindings WHERE account_id = $1 AND {_SOURCE_MATCH}",
        account_id,
        source.workspace_id,
        source.source_type,
        source.source_id,
        source.event_type,
    )
    return None if record is None else _binding(record)


async def bindings_of(
    conn: Queryable, account_id: UUID, sources: Collection[SourceKey]
) -> dict[SourceKey, Binding]:
    """The bindings of ``sources`` in the account (one statement), by source; absent: none."""
    if not sources:
        return {}
    keys = list(sources)
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM event_bindings WHERE account_id = $1"
        " AND (workspace_id, source_type, source_id, event_type) IN (SELECT * FROM"
        " unnest($2::text[], $3::text[], $4::text[], $5::text[]))",
        account_id,
        [key.workspace_id for key in keys],
        [key.source_type for key in keys],
        [key.source_id for key in keys],
        [key.event_type for key in keys],
    )
    found = (_binding(record) for record in records)
    return {binding.source: binding for binding in found}


async def bindings_for(
    conn: Queryable, account_id: UUID, workspace_id: str, calendar_id: str
) -> list[Binding]:
    """Every binding of a workspace in one calendar (what REBUILD_ALL walks), oldest first."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM event_bindings"
        " WHERE account_id = $1 AND workspace_id = $2 AND calendar_id = $3"
        " ORDER BY created_at, id",
        account_id,
        workspace_id,
        calendar_id,
    )
    return [_binding(record) for record in records]


async def binding_for_event(
    conn: Queryable, account_id: UUID, calendar_id: str, provider_event_id: str
) -> Binding | None:
    """The binding whose provider event is ``provider_event_id`` (an echo check), or None."""
    # Ids are unique per calendar at the provider; should two rows ever name one, the latest
    # written wins.
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM event_bindings"
        " WHERE account_id = $1 AND calendar_id = $2 AND provider_event_id = $3"
        " ORDER BY updated_at DESC LIMIT 1",
        account_id,
        calendar_id,
        provider_event_id,
    )
    return None if record is None else _binding(record)


async def begin_create(
    conn: Queryable, account_id: UUID, source: SourceKey, calendar_id: str
) -> Binding:
    """A new ``creating`` binding for ``source``; an existing one is returned unchanged.

    A returned binding that is not ``creating`` needs ``bump_generation`` before a create.
    """
    record = await conn.fetchrow(
        "INSERT INTO event_bindings"
        " (account_id, workspace_id, source_type, source_id, event_type, calendar_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (account_id, workspace_id, source_type, source_id, event_type) DO NOTHING"
        f" RETURNING {_COLUMNS}",
        account_id,
        source.workspace_id,
        source.source_type,
        source.source_id,
        source.event_type,
        calendar_id,
    )
    if record is not None:
        return _binding(record)
    existing = await get_binding(conn, account_id, source)
    if existing is None:  # pragma: no cover - only if deleted between the two statements
        raise LookupError(f"binding of {source} vanished during begin_create")
    return existing


async def bump_generation(
    conn: Queryable, binding_id: UUID, *, calendar_id: str | None = None
) -> Binding:
    """Prepare a recreation: generation + 1, ``creating``, no provider id or etag.

    ``calendar_id`` moves the binding to another calendar (a move is a recreation).
    """
    record = await conn.fetchrow(
        "UPDATE event_bindings SET generation = generation + 1, state = 'creating',"
        " provider_event_id = NULL, etag = NULL, calendar_id = coalesce($2, calendar_id),"
        f" updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        binding_id,
        calendar_id,
    )
    return _required(record, binding_id)


async def record_write(
    conn: Queryable,
    binding_id: UUID,
    *,
    provider_event_id: str,
    etag: str | None,
    applied_version: int,
    content: EventContent,
) -> Binding:
    """Record a successful create or update: ``live``, with what the provider now holds."""
    record = await conn.fetchrow(
        "UPDATE event_bindings SET state = 'live', provider_event_id = $2, etag = $3,"
        " applied_version = $4, content = $5::jsonb, updated_at = now()"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        binding_id,
        provider_event_id,
        etag,
        applied_version,
        _encode_content(content),
    )
    return _required(record, binding_id)


async def mark_deleted(
    conn: Queryable, binding_id: UUID, *, applied_version: int | None = None
) -> Binding:
    """Record that the provider event is gone (we deleted it, or a GET said 404/410). A cancel
    passes its version: the deleted binding is then a tombstone that makes older upserts stale."""
    record = await conn.fetchrow(
        "UPDATE event_bindings SET state = 'deleted', updated_at = now(),"
        " applied_version = greatest(applied_version, $2)"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        binding_id,
        applied_version,
    )
    return _required(record, binding_id)


async def delete_binding(conn: Queryable, binding_id: UUID) -> bool:
    """Forget a binding (its conflicts go with it); whether it existed."""
    status = await conn.execute("DELETE FROM event_bindings WHERE id = $1", binding_id)
    return status != "DELETE 0"


async def record_conflict(
    conn: Queryable,
    binding: Binding,
    outbox_id: int | None,
    local: EventContent,
    provider_copy: Mapping[str, Any],
) -> int:
    """Record that the user's edit and our upsert disagree (ConflictPolicy.RECORD); its id."""
    conflict_id = await conn.fetchval(
        "INSERT INTO outbox_conflicts (account_id, binding_id, outbox_id, local, provider_copy)"
        " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb) RETURNING id",
        binding.account_id,
        binding.id,
        outbox_id,
        _encode_content(local),
        # default=str: a provider copy may hold values JSON lacks (e.g. Decimal); keep them legible.
        orjson.dumps(dict(provider_copy), default=str).decode(),
    )
    return int(conflict_id)
