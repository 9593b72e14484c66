"""Waking a replica's account actors for their outbox items: LISTEN, and a fallback poll.

``run_outbox_wakeups`` holds one dedicated connection LISTENing on ``store.outbox.CHANNEL``
and hands each notified account id to ``on_account``; ``DueItemsPoll`` asks Postgres which of
the accounts running here have items due, every ``IW_OUTBOX_POLL_S`` or at once when poked.

Invariants:
- the listener is a connection of its own, never a pool's (LISTEN is session state), opened
  with the pools' ``search_path`` and application name (``open_listener``);
- a lost listener (its backend terminated, a failed ping, a refused connect) is replaced after
  a capped, jittered backoff; only dependency failures are retried, anything else propagates;
- ``on_reconnect`` runs after every LISTEN took effect, the first included: notifications sent
  while no LISTEN was active are lost, and it lets the caller poll (``DueItemsPoll.poke``);
- callbacks are plain functions run on the event loop: they must not block (post, set events);
- a notification names an account that may not run here (other shards, other schemas in the
  same database): ``on_account`` decides, this module does not filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias
from uuid import UUID

import asyncpg
import structlog

from actors.account.policy import backoff_s
from store.db import APPLICATION_NAME, PgPool, quote_ident, validate_schema
from store.outbox import accounts_with_due_items, listen_outbox
from supervisor.resilient import DEPENDENCY_ERRORS

log = structlog.get_logger("supervisor.outbox_wakeups")

# asyncpg's classes are generic only in its stubs, so the aliases are strings (as in store.db).
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
Connect: TypeAlias = "Callable[[], Awaitable[Connection]]"

POLL_CHUNK = 1000  # accounts per due-items query: one statement stays short however many run


async def open_listener(dsn: str, schema: str) -> Connection:
    """A dedicated connection set up as ``store.db.create_pool``'s are."""
    validate_schema(schema)
    return await asyncpg.connect(
        dsn,
        server_settings={
            "search_path": f"{quote_ident(schema)},public",
            "application_name": APPLICATION_NAME,
        },
    )


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """Liveness checks and reconnect backoff of the listener."""

    ping_every_s: float = 30.0  # a silent network loss shows only when we ask
    ping_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if min(self.ping_every_s, self.ping_timeout_s, self.backoff_initial_s) <= 0:
            raise ValueError("intervals must be positive")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")


async def run_outbox_wakeups(
    connect: Connect,
    on_account: Callable[[UUID], None],
    on_reconnect: Callable[[], None],
    *,
    policy: ListenerPolicy | None = None,
    rng: random.Random | None = None,
) -> None:
    """LISTEN for outbox inserts and replays until cancelled, reconnecting when the link drops.

    ``connect`` opens a fresh dedicated connection, e.g.
    ``functools.partial(open_listener, dsn, schema)``.
    """
    policy = policy or ListenerPolicy()
    rng = rng or random.Random()
    clock = asyncio.get_running_loop().time
    failures = 0
    while True:
        started = clock()
        try:
            await _listen_once(connect, on_account, on_reconnect, policy)
        except DEPENDENCY_ERRORS as error:
            reason = f"{type(error).__name__}: {error}"
        else:
            reason = "connection lost"
        # A listener that held for a while starts its backoff afresh: a blip a day stays cheap.
        failures = 1 if clock() - started > policy.backoff_max_s else failures + 1
        delay = backoff_s(failures, policy.backoff_initial_s, policy.backoff_max_s, rng)
        log.warning(
            "outbox listener lost; reconnecting",
            error=reason,
            failures=failures,
            retry_in_s=round(delay, 2),
        )
        await asyncio.sleep(delay)


async def _listen_once(
    connect: Connect,
    on_account: Callable[[UUID], None],
    on_reconnect: Callable[[], None],
    policy: ListenerPolicy,
) -> None:
    """Listen on one connection; returns when it is lost (or raises a dependency error)."""
    conn = await connect()
    lost = asyncio.Event()
    try:
        conn.add_termination_listener(lambda _conn: lost.set())
        await listen_outbox(conn, on_account)
        log.info("outbox listener ready")
        on_reconnect()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(policy.ping_every_s):
                    await lost.wait()
            if not lost.is_set():
                async with asyncio.timeout(policy.ping_timeout_s):
                    await conn.execute("SELECT 1")
    finally:
        # Never wait on a connection that may be half dead: terminate closes it at once.
        conn.terminate()


@dataclass(slots=True)
class DueItemsPoll:
    """The fallback poll: which running accounts have outbox items due, every ``every_s``.

    ``running`` gives the accounts whose actors run here; each due one goes to ``on_account``.
    ``poke`` makes the next poll happen at once (after a listener reconnect).
    """

    pool: PgPool
    running: Callable[[], Collection[UUID]]
    on_account: Callable[[UUID], None]
    every_s: float
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _poked: asyncio.Event = field(default_factory=asyncio.Event)

    def poke(self) -> None:
        """Poll now instead of at the next period."""
        self._poked.set()

    async def run(self) -> None:
        """Poll every ``every_s`` (or when poked) until cancelled; dependency errors propagate
        (run it under ``run_resilient``)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every_s):
                    await self._poked.wait()
            self._poked.clear()
            await self.poll_once()

    async def poll_once(self) -> set[UUID]:
        """One poll: the running accounts with items due now, each handed to ``on_account``."""
        accounts = sorted(set(self.running()))
        due: set[UUID] = set()
        now = self.now()
        for start in range(0, len(accounts), POLL_CHUNK):
            chunk = accounts[start : start + POLL_CHUNK]
            due |= await accounts_with_due_items(self.pool, chunk, now=now)
        for account_id in sorted(due):
            self.on_account(account_id)
        if due:
            log.debug("outbox poll found due items", accounts=len(due))
        return due
