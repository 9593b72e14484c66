"""The outbox (``outbox`` table): applications' write requests and their outcome.

Invariants:
- applications insert rows in their own transaction; a trigger then notifies channel
  ``iw_outbox`` with the account id, so the owning actor wakes at once (``listen_outbox``);
- an item moves ``pending`` -> ``done`` | ``skipped`` | ``dead_letter``, and only a replay moves
  a dead letter back to ``pending`` (attempts 0, due now, last error kept); the transitions here
  touch pending rows only, so a late call never revives or rewrites a finished item;
- ``done_at`` is set when an item becomes done or skipped, and retention counts from it;
- every row converts to an ``OutboxItem``: the table's CHECKs mirror ``EventTiming``'s rules;
- stored errors are cut to ``MAX_ERROR_CHARS`` characters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import orjson
import structlog

from outbox.model import (
    ConflictPolicy,
    EventContent,
    ItemState,
    Operation,
    OutboxItem,
    SourceKey,
)
from providers.models import EventTiming
from store.db import Queryable

log = structlog.get_logger("store.outbox")

CHANNEL = "iw_outbox"
MAX_ERROR_CHARS = 2000
DEFAULT_RETENTION = timedelta(days=30)
CLEANUP_BATCH = 5000

_COLUMNS = (
    "id, account_id, operation, workspace_id, source_type, source_id, event_type, calendar_id,"
    " version, title, description, all_day, start_date, end_date, start_at, end_at, time_zone,"
    " state, attempts, next_attempt_at, last_error, created_at"
)


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """Counts by state and the oldest pending item, for operators."""

    counts: dict[ItemState, int] = field(default_factory=dict)  # every state, 0 included
    oldest_pending_at: datetime | None = None  # created_at of the oldest pending item
    oldest_pending_age: timedelta | None = None  # database now() minus that


def _error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _item(record: asyncpg.Record) -> OutboxItem:
    operation = Operation(record["operation"])
    source = None
    if operation is not Operation.REBUILD_ALL:
        source = SourceKey(
            workspace_id=record["workspace_id"],
            source_type=record["source_type"],
            source_id=record["source_id"],
            event_type=record["event_type"],
        )
    content = None
    if operation is Operation.UPSERT_EVENT:
        all_day = bool(record["all_day"])
        timing = (
            EventTiming(all_day=True, start_date=record["start_date"], end_date=record["end_date"])
            if all_day
            else EventTiming(
                all_day=False,
                start_at=record["start_at"],
                end_at=record["end_at"],
                time_zone=record["time_zone"],
            )
        )
        content = EventContent(
            title=record["title"], timing=timing, description=record["description"]
        )
    return OutboxItem(
        id=record["id"],
        account_id=record["account_id"],
        operation=operation,
        workspace_id=record["workspace_id"],
        calendar_id=record["calendar_id"],
        source=source,
        version=record["version"],
        content=content,
        state=ItemState(record["state"]),
        attempts=record["attempts"],
        next_attempt_at=record["next_attempt_at"],
        last_error=record["last_error"],
        created_at=record["created_at"],
    )


async def enqueue_upsert(
    conn: Queryable,
    account_id: UUID,
    source: SourceKey,
    calendar_id: str,
    *,
    version: int,
    content: EventContent,
) -> int:
    """Ask for the source's event to say ``content`` (version ``version``); the item id."""
    timing = content.timing
    item_id = await conn.fetchval(
        "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
        " event_type, calendar_id, version, title, description, all_day, start_date, end_date,"
        " start_at, end_at, time_zone)"
        " VALUES ($1, 'UPSERT_EVENT', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
        " $15) RETURNING id",
        account_id,
        source.workspace_id,
        source.source_type,
        source.source_id,
        source.event_type,
        calendar_id,
        version,
        content.title,
        content.description,
        timing.all_day,
        timing.start_date if timing.all_day else None,
        timing.end_date if timing.all_day else None,
        None if timing.all_day else timing.start_at,
        None if timing.all_day else timing.end_at,
        None if timing.all_day else timing.time_zone,
    )
    return int(item_id)


async def enqueue_cancel(
    conn: Queryable, account_id: UUID, source: SourceKey, calendar_id: str, *, version: int
) -> int:
    """Ask for the source's event to be deleted (as of version ``version``); the item id."""
    item_id = await conn.fetchval(
        "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
        " event_type, calendar_id, version)"
        " VALUES ($1, 'CANCEL_EVENT', $2, $3, $4, $5, $6, $7) RETURNING id",
        account_id,
        source.workspace_id,
        source.source_type,
        source.source_id,
        source.event_type,
        calendar_id,
        version,
    )
    return int(item_id)


async def enqueue_rebuild(
    conn: Queryable, account_id: UUID, workspace_id: str, calendar_id: str
) -> int:
    """Ask for every bound event of a workspace in a calendar to be recreated; the item id."""
    item_id = await conn.fetchval(
        "INSERT INTO outbox (account_id, operation, workspace_id, calendar_id)"
        " VALUES ($1, 'REBUILD_ALL', $2, $3) RETURNING id",
        account_id,
        workspace_id,
        calendar_id,
    )
    return int(item_id)


async def enqueue_payload(
    conn: Queryable,
    account_id: UUID,
    kind: str,
    operation: str,
    payload: Mapping[str, object],
    *,
    workspace_id: str = "",
) -> int:
    """Queue ``operation`` of ``kind`` with its (already validated) JSON payload; the item id.
    The table refuses a kind that is not the account's and an operation the kind lacks."""
    item_id = await conn.fetchval(
        "INSERT INTO outbox (account_id, kind, operation, workspace_id, payload)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
        account_id,
        kind,
        operation,
        workspace_id,
        orjson.dumps(dict(payload)).decode(),
    )
    return int(item_id)


async def get_payload(conn: Queryable, item_id: int) -> tuple[str, str, dict[str, object]] | None:
    """(kind, operation, payload) of an item queued with a JSON payload, or None."""
    record = await conn.fetchrow(
        "SELECT kind, operation, payload::text AS payload FROM outbox WHERE id = $1", item_id
    )
    if record is None or record["payload"] is None:
        return None
    return record["kind"], record["operation"], orjson.loads(record["payload"])


async def get_item(conn: Queryable, item_id: int) -> OutboxItem | None:
    """One item by id, whatever its state, or None."""
    record = await conn.fetchrow(f"SELECT {_COLUMNS} FROM outbox WHERE id = $1", item_id)
    return None if record is None else _item(record)


async def due_items(
    conn: Queryable, account_id: UUID, *, now: datetime, limit: int
) -> list[OutboxItem]:
    """Up to ``limit`` of the account's pending items due by ``now``, lowest id first."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM outbox"
        " WHERE account_id = $1 AND state = 'pending' AND next_attempt_at <= $2"
        " ORDER BY id LIMIT $3",
        account_id,
        now,
        limit,
    )
    return [_item(record) for record in records]


async def pending_items(conn: Queryable, account_id: UUID, *, limit: int) -> list[OutboxItem]:
    """Up to ``limit`` of the account's pending items (due or backing off), lowest id first,
    plus every other pending item of their sources: a source's newest item decides whether
    its older ones are stale, even while it backs off."""
    records = await conn.fetch(
        f"WITH batch AS (SELECT * FROM outbox WHERE account_id = $1 AND state = 'pending'"
        " ORDER BY id LIMIT $2)"
        f" SELECT {_COLUMNS} FROM batch"
        f" UNION SELECT {_COLUMNS} FROM outbox o WHERE o.account_id = $1"
        " AND o.state = 'pending' AND o.id > (SELECT max(id) FROM batch) AND EXISTS ("
        " SELECT 1 FROM batch b WHERE (b.workspace_id, b.source_type, b.source_id, b.event_type)"
        " = (o.workspace_id, o.source_type, o.source_id, o.event_type))"
        " ORDER BY id",
        account_id,
        limit,
    )
    return [_item(record) for record in records]


async def next_due_at(conn: Queryable, account_id: UUID) -> datetime | None:
    """When the account's earliest pending item is due (maybe in the past), or None."""
    value: datetime | None = await conn.fetchval(
        "SELECT min(next_attempt_at) FROM outbox WHERE account_id = $1 AND state = 'pending'",
        account_id,
    )
    return value


async def accounts_with_due_items(
    conn: Queryable, account_ids: Sequence[UUID], *, now: datetime
) -> set[UUID]:
    """Those of ``account_ids`` with a pending item due by ``now`` (the fallback poll)."""
    # One index probe per account, rather than a DISTINCT over every due row.
    records = await conn.fetch(
        "SELECT a.id FROM unnest($1::uuid[]) AS a(id) WHERE EXISTS (SELECT 1 FROM outbox o"
        " WHERE o.account_id = a.id AND o.state = 'pending' AND o.next_attempt_at <= $2)",
        list(set(account_ids)),
        now,
    )
    return {record["id"] for record in records}


@dataclass(frozen=True, slots=True)
class Inherited:
    """What an account's earlier actor incarnation left in the outbox."""

    unknown_creates: bool  # a binding is ``creating``: a create whose outcome is unknown
    due: bool  # a pending item is due (maybe in flight when that incarnation ended)
    tried: bool  # a pending item failed before: its last attempt may have applied


async def inherited(conn: Queryable, account_id: UUID, *, now: datetime) -> Inherited:
    """The account's ``Inherited`` state, in one round trip (every actor start asks)."""
    record = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM event_bindings WHERE account_id = $1"
        " AND state = 'creating') AS unknown_creates,"
        " EXISTS (SELECT 1 FROM outbox WHERE account_id = $1 AND state = 'pending'"
        " AND next_attempt_at <= $2) AS due,"
        " EXISTS (SELECT 1 FROM outbox WHERE account_id = $1 AND state = 'pending'"
        " AND attempts > 0) AS tried",
        account_id,
        now,
    )
    assert record is not None  # a SELECT without FROM always yields its row
    return Inherited(record["unknown_creates"], record["due"], record["tried"])


async def mark_done(conn: Queryable, ids: Sequence[int]) -> int:
    """Finish pending items as done; how many were."""
    status = await conn.execute(
        "UPDATE outbox SET state = 'done', done_at = now(), updated_at = now()"
        " WHERE id = ANY($1::bigint[]) AND state = 'pending'",
        list(ids),
    )
    return int(status.split()[-1])


async def mark_skipped(conn: Queryable, ids: Sequence[int], reason: str) -> int:
    """Finish pending items as skipped (stale), ``reason`` in ``last_error``; how many were."""
    status = await conn.execute(
        "UPDATE outbox SET state = 'skipped', last_error = $2, done_at = now(), updated_at = now()"
        " WHERE id = ANY($1::bigint[]) AND state = 'pending'",
        list(ids),
        _error(reason),
    )
    return int(status.split()[-1])


async def schedule_retry(
    conn: Queryable, item_id: int, *, attempts: int, next_attempt_at: datetime, error: str
) -> bool:
    """Record a failed attempt of a pending item and when to try again; whether it was pending."""
    status = await conn.execute(
        "UPDATE outbox SET attempts = $2, next_attempt_at = $3, last_error = $4,"
        " updated_at = now() WHERE id = $1 AND state = 'pending'",
        item_id,
        attempts,
        next_attempt_at,
        _error(error),
    )
    return status != "UPDATE 0"


async def dead_letter(conn: Queryable, item_id: int, *, attempts: int, error: str) -> bool:
    """Give up on a pending item, keeping its last error; whether it was pending."""
    status = await conn.execute(
        "UPDATE outbox SET state = 'dead_letter', attempts = $2, last_error = $3,"
        " updated_at = now() WHERE id = $1 AND state = 'pending'",
        item_id,
        attempts,
        _error(error),
    )
    return status != "UPDATE 0"


async def dead_letter_calendar(
    conn: Queryable, account_id: UUID, calendar_ids: Sequence[str], *, error: str
) -> int:
    """Give up every pending write of the account to these calendars (their ids, or the
    ``primary`` alias among them); how many."""
    status = await conn.execute(
        "UPDATE outbox SET state = 'dead_letter', last_error = $3, updated_at = now()"
        " WHERE account_id = $1 AND state = 'pending' AND calendar_id = ANY($2::text[])",
        account_id,
        list(calendar_ids),
        error,
    )
    return int(status.split()[-1])


async def conflict_policy(conn: Queryable, account_id: UUID) -> ConflictPolicy:
    """What the account's upserts do when the user edited their event (``accounts`` column)."""
    value = await conn.fetchval("SELECT conflict_policy FROM accounts WHERE id = $1", account_id)
    if value is None:
        raise LookupError(f"account {account_id} does not exist")
    return ConflictPolicy(value)


async def status(conn: Queryable, account_id: UUID | None = None) -> OutboxStatus:
    """Counts by state and the oldest pending item, for all accounts or one."""
    records = await conn.fetch(
        "SELECT state, count(*) AS n FROM outbox"
        " WHERE $1::uuid IS NULL OR account_id = $1 GROUP BY state",
        account_id,
    )
    counts = dict.fromkeys(ItemState, 0)
    counts.update({ItemState(record["state"]): int(record["n"]) for record in records})
    oldest = await conn.fetchrow(
        "SELECT min(created_at) AS at, now() - min(created_at) AS age FROM outbox"
        " WHERE state = 'pending' AND ($1::uuid IS NULL OR account_id = $1)",
        account_id,
    )
    return OutboxStatus(
        counts=counts,
        oldest_pending_at=None if oldest is None else oldest["at"],
        oldest_pending_age=None if oldest is None else oldest["age"],
    )


async def dead_letters(
    conn: Queryable, *, limit: int, after_id: int | None = None, account_id: UUID | None = None
) -> list[OutboxItem]:
    """Up to ``limit`` dead letters with ids above ``after_id`` (pages), lowest id first."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM outbox WHERE state = 'dead_letter'"
        " AND id > coalesce($1::bigint, 0) AND ($2::uuid IS NULL OR account_id = $2)"
        " ORDER BY id LIMIT $3",
        after_id,
        account_id,
        limit,
    )
    return [_item(record) for record in records]


async def replay(conn: Queryable, ids: Sequence[int]) -> int:
    """Put these dead letters back to pending (attempts 0, due now), waking their actors."""
    records = await conn.fetch(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(),"
        " updated_at = now() WHERE id = ANY($1::bigint[]) AND state = 'dead_letter'"
        " RETURNING account_id",
        list(ids),
    )
    await _wake(conn, {record["account_id"] for record in records})
    return len(records)


async def replay_all(conn: Queryable, account_id: UUID | None = None) -> int:
    """Put every dead letter (of one account, if given) back to pending; how many."""
    records = await conn.fetch(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(),"
        " updated_at = now() WHERE state = 'dead_letter' AND ($1::uuid IS NULL OR account_id = $1)"
        " RETURNING account_id",
        account_id,
    )
    await _wake(conn, {record["account_id"] for record in records})
    return len(records)


async def _wake(conn: Queryable, account_ids: set[UUID]) -> None:
    # The trigger only sees inserts; a replayed item must wake its actor just the same. In the
    # caller's transaction, if any, the notifications are sent at its commit.
    if account_ids:
        await conn.execute(
            "SELECT pg_notify($1, a::text) FROM unnest($2::uuid[]) AS a",
            CHANNEL,
            list(account_ids),
        )


async def cleanup_done(
    conn: Queryable, *, older_than: timedelta = DEFAULT_RETENTION, batch: int = CLEANUP_BATCH
) -> int:
    """Delete done and skipped items finished before ``older_than`` ago; how many.

    Deletes ``batch`` rows per statement, so outside a transaction no lock is held for long.
    """
    total = 0
    while True:
        status_text = await conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
            " WHERE state IN ('done', 'skipped') AND done_at < now() - $1::interval"
            " LIMIT $2)",
            older_than,
            batch,
        )
        deleted = int(status_text.split()[-1])
        total += deleted
        if deleted < batch:
            return total


def _parse_account(payload: object) -> UUID | None:
    try:
        return UUID(str(payload))
    except ValueError:
        return None


async def listen_outbox(
    conn: asyncpg.Connection[asyncpg.Record], on_account: Callable[[UUID], None]
) -> Callable[[], Awaitable[None]]:
    """Call ``on_account`` with the account id of each notification; returns the remover.

    ``conn`` must be a dedicated connection, not a pool's: LISTEN is session state.
    """

    def notified(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        account_id = _parse_account(payload)
        if account_id is None:
            log.warning("ignoring malformed outbox notification", payload=str(payload)[:200])
            return
        on_account(account_id)

    await conn.add_listener(CHANNEL, notified)

    async def remove() -> None:
        await conn.remove_listener(CHANNEL, notified)

    return remove
