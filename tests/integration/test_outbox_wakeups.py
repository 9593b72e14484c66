"""Outbox wake-ups against a real database: the listener, its reconnects, the fallback poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from operations import outbox as client
from store.accounts import Account, create_account
from store.db import PgPool
from supervisor.outbox_wakeups import (
    Connection,
    DueItemsPoll,
    ListenerPolicy,
    open_listener,
    run_outbox_wakeups,
)
from tests.conftest import SCHEMA

FAST = ListenerPolicy(ping_every_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Listener:
    """A running ``run_outbox_wakeups`` and what it reported."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.connections: list[Connection] = []
        self.accounts: asyncio.Queue[UUID] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.reconnects = 0
        self.refuse_next = 0

    async def connect(self) -> Connection:
        if self.refuse_next:
            self.refuse_next -= 1
            raise OSError("connection refused (test)")
        conn = await open_listener(self.database_url, SCHEMA)
        self.connections.append(conn)
        return conn

    def on_reconnect(self) -> None:
        self.reconnects += 1
        self.ready.set()

    async def next_account(self) -> UUID:
        async with asyncio.timeout(5):
            return await self.accounts.get()

    async def wait_ready(self) -> None:
        async with asyncio.timeout(5):
            await self.ready.wait()
        self.ready.clear()


@contextlib.asynccontextmanager
async def listening(database_url: str, refuse_first: int = 0) -> AsyncIterator[Listener]:
    listener = Listener(database_url)
    listener.refuse_next = refuse_first
    task = asyncio.create_task(
        run_outbox_wakeups(
            listener.connect, listener.accounts.put_nowait, listener.on_reconnect, policy=FAST
        )
    )
    try:
        await listener.wait_ready()
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(conn.is_closed() for conn in listener.connections)


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=8)


async def _rebuild(pool: PgPool, account_id: UUID) -> int:
    return await client.enqueue_rebuild(pool, account_id, workspace_id="w1")


async def test_an_insert_from_another_connection_wakes_its_account(
    pool: PgPool, account: Account, database_url: str
) -> None:
    async with listening(database_url) as listener:
        assert listener.reconnects == 1  # the first LISTEN counts: the caller polls once
        conn = listener.connections[0]
        assert await conn.fetchval("SELECT current_schema()") == SCHEMA
        await _rebuild(pool, account.id)
        assert await listener.next_account() == account.id


async def test_a_terminated_listener_reconnects_and_hears_later_inserts(
    pool: PgPool, account: Account, database_url: str
) -> None:
    async with listening(database_url) as listener:
        first = listener.connections[0]
        first_pid = first.get_server_pid()
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        await listener.wait_ready()  # on_reconnect: the runtime polls what it may have missed
        assert listener.reconnects == 2
        assert first.is_closed()
        assert listener.connections[1].get_server_pid() != first_pid
        await _rebuild(pool, account.id)
        assert await listener.next_account() == account.id


async def test_a_refused_connect_is_retried(
    pool: PgPool, account: Account, database_url: str
) -> None:
    async with listening(database_url, refuse_first=2) as listener:
        assert (listener.reconnects, len(listener.connections)) == (1, 1)
        await _rebuild(pool, account.id)
        assert await listener.next_account() == account.id


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        ListenerPolicy(ping_every_s=0)
    with pytest.raises(ValueError, match="backoff_max_s"):
        ListenerPolicy(backoff_initial_s=2, backoff_max_s=1)


async def test_poll_finds_due_items_of_running_accounts_only(pool: PgPool) -> None:
    accounts = [
        await create_account(pool, provider="google", external_user_id=f"u{n}", shard_count=8)
        for n in range(4)
    ]
    due, later, elsewhere, idle = (a.id for a in accounts)
    for account_id in (due, later, elsewhere):
        await _rebuild(pool, account_id)
    await pool.execute(
        "UPDATE outbox SET next_attempt_at"
        " = CASE WHEN account_id = $1 THEN $2::timestamptz ELSE $3::timestamptz END",
        later,
        T0 + timedelta(minutes=5),  # backing off: not due at T0
        T0,
    )
    woken: list[UUID] = []
    poll = DueItemsPoll(
        pool, lambda: [due, later, idle], woken.append, every_s=3600.0, now=lambda: T0
    )
    assert await poll.poll_once() == {due}
    assert woken == [due]


async def test_poke_polls_at_once(pool: PgPool, account: Account) -> None:
    await _rebuild(pool, account.id)
    woken = asyncio.Event()
    poll = DueItemsPoll(pool, lambda: [account.id], lambda _account: woken.set(), every_s=3600.0)
    task = asyncio.create_task(poll.run())
    try:
        poll.poke()
        async with asyncio.timeout(5):
            await woken.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_poll_with_nothing_running_finds_nothing(pool: PgPool, account: Account) -> None:
    await _rebuild(pool, account.id)
    poll = DueItemsPoll(pool, list, lambda _account: None, every_s=1.0)
    assert await poll.poll_once() == set()
