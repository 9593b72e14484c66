"""Accounts: one row per connected provider user, assigned to a shard at creation.

Invariants:
- ``(provider, external_user_id)`` identifies an account; creating it twice returns the first row.
- An account's shard is ``shard_for(id, shard_count)``, a pure function of its id, computed
  before the insert; it never changes afterwards.
- Every status change also sets ``last_error`` and bumps ``updated_at``.
- ``delete_account`` leaves nothing of the account behind: credentials, calendars, events and
  push channels go by ON DELETE CASCADE; ``changes`` has no foreign key, so its rows (and any
  stray ``events`` rows) are purged explicitly, after the account row, so that rows committed
  by a writer the cascade waited for are purged too.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from uuid import UUID

import asyncpg

from config.redact import redact_text
from store.db import Queryable
from store.vocabulary import STATUSES, Provider, Status

_COLUMNS = (
    "id, provider, external_user_id, shard, status, last_error, created_at, updated_at, subject"
)


@dataclass(frozen=True, slots=True)
class Account:
    """A row of ``accounts``."""

    id: UUID
    provider: Provider
    external_user_id: str
    shard: int
    status: Status
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    # The stable subject (Google sub, Entra tid:oid), once a connect or a refresh named it.
    subject: str | None = None


def shard_for(account_id: UUID, shard_count: int) -> int:
    """The shard of an account: first 8 bytes of sha-256(uuid bytes), big-endian, mod count.

    Hashing (rather than ``account_id.int``) spreads ids evenly whatever the UUID version's
    fixed bits, and sha-256 is the same in every process, unlike ``hash()``.
    """
    if shard_count < 1:
        raise ValueError(f"shard_count must be >= 1, got {shard_count}")
    digest = hashlib.sha256(account_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def _account(row: asyncpg.Record) -> Account:
    return Account(
        id=row["id"],
        provider=row["provider"],
        external_user_id=row["external_user_id"],
        shard=row["shard"],
        status=cast(Status, row["status"]),
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        subject=row["subject"],
    )


class UnknownKind(ValueError):
    """An account names a kind that is not registered (not in ``account_kinds``)."""


async def known_kinds(conn: Queryable) -> list[str]:
    """The registered account kinds, by name."""
    return [r["name"] for r in await conn.fetch("SELECT name FROM account_kinds ORDER BY name")]


def _check(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {kind} {value!r}: expected one of {', '.join(allowed)}")


async def create_account(
    conn: Queryable, *, provider: Provider, external_user_id: str, shard_count: int
) -> Account:
    """Insert an account, or return the existing one for ``(provider, external_user_id)``;
    ``UnknownKind`` when ``provider`` names no kind in ``account_kinds``."""
    account_id = uuid.uuid4()
    try:
        row = await conn.fetchrow(
            f"INSERT INTO accounts (id, provider, external_user_id, shard) VALUES ($1, $2, $3, $4)"
            f" ON CONFLICT (provider, external_user_id) DO NOTHING RETURNING {_COLUMNS}",
            account_id,
            provider,
            external_user_id,
            shard_for(account_id, shard_count),
        )
    except asyncpg.ForeignKeyViolationError:
        raise UnknownKind(f"unknown account kind {provider!r}") from None
    if row is None:
        # ON CONFLICT waited for any concurrent inserter to commit, so the row is visible now.
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM accounts WHERE provider = $1 AND external_user_id = $2",
            provider,
            external_user_id,
        )
        if row is None:
            raise LookupError(f"{provider} account {external_user_id!r} was deleted concurrently")
    return _account(row)


async def find_account(
    conn: Queryable, provider: Provider, external_user_id: str
) -> Account | None:
    """The account for ``(provider, external_user_id)``, or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM accounts WHERE provider = $1 AND external_user_id = $2",
        provider,
        external_user_id,
    )
    return None if row is None else _account(row)


async def find_account_by_subject(
    conn: Queryable, provider: Provider, subject: str
) -> Account | None:
    """The account bound to ``subject`` at ``provider``, or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM accounts WHERE provider = $1 AND subject = $2", provider, subject
    )
    return None if row is None else _account(row)


async def bind_subject(conn: Queryable, account_id: UUID, subject: str) -> None:
    """Bind an account (that had none) to its subject."""
    await conn.execute(
        "UPDATE accounts SET subject = $2, updated_at = now() WHERE id = $1 AND subject IS NULL",
        account_id,
        subject,
    )


class Learned(enum.Enum):
    """What ``learn_subject`` found."""

    BOUND = "bound"  # the account had no subject and is bound to this one now
    KNOWN = "known"  # the account was bound to it already
    HELD_ELSEWHERE = "held_elsewhere"  # another account of the kind is bound to it
    CONFLICT = "conflict"  # the account is bound to another subject


async def learn_subject(
    conn: Queryable, account_id: UUID, provider: Provider, subject: str
) -> Learned:
    """Bind the account to ``subject`` unless it or the subject is bound already (call in a
    transaction: the account's row is locked until it ends)."""
    current = await conn.fetchval(
        "SELECT subject FROM accounts WHERE id = $1 FOR UPDATE", account_id
    )
    if current == subject:
        return Learned.KNOWN
    if current is not None:
        return Learned.CONFLICT
    holder = await conn.fetchval(
        "SELECT id FROM accounts WHERE provider = $1 AND subject = $2", provider, subject
    )
    if holder is not None:
        return Learned.HELD_ELSEWHERE
    await bind_subject(conn, account_id, subject)
    return Learned.BOUND


async def get_account(conn: Queryable, account_id: UUID) -> Account | None:
    """The account with this id, or None."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE id = $1", account_id)
    return None if row is None else _account(row)


async def list_accounts(
    conn: Queryable,
    *,
    shards: Sequence[int] | None = None,
    statuses: Sequence[Status] | None = None,
) -> list[Account]:
    """Accounts filtered by shard and/or status (None means any), oldest first."""
    conditions: list[str] = []
    args: list[object] = []
    if shards is not None:
        args.append(list(shards))
        conditions.append(f"shard = ANY(${len(args)}::int[])")
    if statuses is not None:
        for status in statuses:
            _check("status", status, STATUSES)
        args.append(list(statuses))
        conditions.append(f"status = ANY(${len(args)}::text[])")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM accounts{where} ORDER BY created_at, id", *args
    )
    return [_account(r) for r in rows]


async def set_status(
    conn: Queryable, account_id: UUID, status: Status, *, last_error: str | None
) -> Account | None:
    """Set status and last_error (redacted: it reaches the API and the monitor); return the
    updated account, or None if it does not exist."""
    _check("status", status, STATUSES)
    if last_error is not None:
        last_error = redact_text(last_error)
    row = await conn.fetchrow(
        f"UPDATE accounts SET status = $2, last_error = $3, updated_at = now()"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        account_id,
        status,
        last_error,
    )
    return None if row is None else _account(row)


async def mark_quarantined(conn: Queryable, account_id: UUID, last_error: str) -> Account | None:
    """Quarantine an account (stop syncing it) with the reason."""
    return await set_status(conn, account_id, "quarantined", last_error=last_error)


async def delete_account(conn: Queryable, account_id: UUID) -> bool:
    """Purge the account and all its data; False if there was no such account.

    Run it inside a transaction so the purge is all or nothing. The account row goes first
    (cascading to credentials, calendars, their events and push channels): the cascade waits for
    any writer holding a calendar lock, and the statements after it, run with a fresh snapshot
    under READ COMMITTED, then also remove the change-feed rows such a writer committed.
    """
    deleted = await conn.fetchval("DELETE FROM accounts WHERE id = $1 RETURNING id", account_id)
    await conn.execute("DELETE FROM events WHERE account_id = $1", account_id)
    await conn.execute("DELETE FROM changes WHERE account_id = $1", account_id)
    return deleted is not None
