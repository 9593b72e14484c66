"""The outbox benchmark's application: it inserts ``outbox`` rows as an application would.

Run as a child process (``python -m bench.outbox_app``): it reads one JSON request on stdin
(the database URL, the accounts, the rate and the duration), inserts at that steady rate, each
row in its own transaction, prints one JSON line of what it inserted, and exits. The replica's
event loop thus carries none of the application's work, as in production.

Invariants:
- every row is an ``UPSERT_EVENT`` of a source never used before (so each one is a create at the
  provider) whose title names the row (``title_of``), so the provider's event is matched exactly;
- the schedule is fixed (row ``i`` is due at ``i / rate`` s): a late insert never shifts the
  next ones, and rows are inserted concurrently when one transaction takes longer than a tick;
- each row reports its transaction id (for ``pg_xact_commit_timestamp``) and the wall-clock time
  taken just before its COMMIT was sent (the fallback commit clock: never after the commit);
- the pool is closed before the result is printed; stdout carries only that one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from store.db import DEFAULT_SCHEMA, PgPool, create_pool

WORKSPACE = "bench"
SOURCE_TYPE = "bench-item"
EVENT_TYPE = "BENCH"
APP_CONNECTIONS = 8
_CHILD_GRACE_S = 60.0
_CHILD_STOP_S = 10.0

_INSERT = (
    "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
    " event_type, version, title, all_day, start_at, end_at)"
    " VALUES ($1, 'UPSERT_EVENT', $2, $3, $4, $5, 1, $6, false, $7, $8)"
    " RETURNING id, pg_current_xact_id()::xid AS xact"
)
# The burst: every row in one statement and one transaction (one NOTIFY per account).
_INSERT_MANY = (
    "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
    " event_type, version, title, all_day, start_at, end_at)"
    " SELECT a, 'UPSERT_EVENT', $2, $3, s, $4, 1, s, false, $5, $6"
    " FROM unnest($1::uuid[], $7::text[]) AS r(a, s)"
    " RETURNING pg_current_xact_id()::xid AS xact"
)


def title_of(key: str) -> str:
    """The title (and source id) of the row ``key``: unique, so its event is found by it."""
    return f"outbox bench {key}"


def event_slot(index: int) -> tuple[datetime, datetime]:
    """A half-hour slot a few days ahead, inside the sync window (its echo is listed)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today + timedelta(days=2, minutes=30 * (index % 1000))
    return start, start + timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class Inserted:
    """One row the application committed."""

    key: str
    xact: int
    before_commit: float  # time.time() just before COMMIT was sent


async def insert_one(pool: PgPool, account_id: UUID, key: str, index: int) -> Inserted:
    """One row in its own transaction; its transaction id and the time before COMMIT."""
    start, end = event_slot(index)
    title = title_of(key)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            row = await conn.fetchrow(
                _INSERT, account_id, WORKSPACE, SOURCE_TYPE, title, EVENT_TYPE, title, start, end
            )
        except BaseException:
            await transaction.rollback()
            raise
        assert row is not None
        before = time.time()
        await transaction.commit()
    return Inserted(key, int(row["xact"]), before)


async def insert_burst(pool: PgPool, accounts: Sequence[UUID], count: int) -> tuple[int, float]:
    """``count`` rows round-robin over ``accounts`` in one transaction; (xact, before commit)."""
    targets = [accounts[i % len(accounts)] for i in range(count)]
    titles = [title_of(f"B{i}") for i in range(count)]
    start, end = event_slot(0)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            rows = await conn.fetch(
                _INSERT_MANY, targets, WORKSPACE, SOURCE_TYPE, EVENT_TYPE, start, end, titles
            )
        except BaseException:
            await transaction.rollback()
            raise
        before = time.time()
        await transaction.commit()
    return int(rows[0]["xact"]), before


async def run_inserts(
    pool: PgPool, accounts: Sequence[UUID], rate: float, duration_s: float, seed: int
) -> list[Inserted]:
    """Rows ``L0``, ``L1``, ... at ``rate`` per second for ``duration_s``, each on a random
    account, each in its own transaction, on a fixed schedule."""
    rng = random.Random(seed)
    total = int(rate * duration_s)
    started = time.monotonic()
    tasks: list[asyncio.Task[Inserted]] = []
    try:
        for i in range(total):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(insert_one(pool, rng.choice(accounts), f"L{i}", i)))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def _serve_child() -> None:
    """Read the request on stdin, insert, print the rows inserted."""
    request = orjson.loads(sys.stdin.buffer.read())
    accounts = [UUID(a) for a in request["accounts"]]
    pool = await create_pool(request["dsn"], DEFAULT_SCHEMA, max_size=APP_CONNECTIONS)
    try:
        rows = await run_inserts(
            pool, accounts, float(request["rate"]), float(request["duration_s"]), 7
        )
    finally:
        await pool.close()
    out = [(r.key, r.xact, r.before_commit) for r in rows]
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()


@contextlib.asynccontextmanager
async def application(
    dsn: str, accounts: Sequence[UUID], rate: float, duration_s: float
) -> AsyncIterator[asyncio.Task[list[Inserted]]]:
    """The application child, started now; the task yields its rows once it finished. The
    child is killed on the way out if it still runs."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.outbox_app",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    request = {
        "dsn": dsn,
        "accounts": [str(a) for a in accounts],
        "rate": rate,
        "duration_s": duration_s,
    }

    async def result() -> list[Inserted]:
        out, _ = await asyncio.wait_for(
            child.communicate(orjson.dumps(request)), duration_s + _CHILD_GRACE_S
        )
        if child.returncode != 0 or not out.strip():
            raise RuntimeError(f"the application child failed (exit {child.returncode})")
        rows: list[Any] = orjson.loads(out)
        return [Inserted(str(k), int(x), float(t)) for k, x, t in rows]

    task = asyncio.get_running_loop().create_task(result(), name="bench.application")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if child.returncode is None:
            child.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), _CHILD_STOP_S)


if __name__ == "__main__":
    asyncio.run(_serve_child())
