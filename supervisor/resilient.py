"""Keeps a replica's background loops (inbox, scan, relay) alive through dependency outages.

Invariants:
- a loop that fails because Postgres or Redis is unreachable is restarted after a capped,
  jittered exponential backoff, and the failure is logged each time; the replica and its
  actors keep running meanwhile (they retry on their own);
- any other exception is a bug: it propagates and ends the replica, as it would have;
- a loop that ran longer than the backoff cap before failing starts its backoff afresh, so a
  blip a day does not grow into a long pause.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from redis.exceptions import RedisError

from actors.account.policy import backoff_s

log = structlog.get_logger("supervisor.resilient")

# Failures that mean "a dependency is not there right now", as opposed to a bug.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # A pooled connection the server dropped mid-query can be left in a state asyncpg refuses
    # to use ("cannot switch to state ..."): seen when Postgres stops under a running replica
    # (tests/system/test_postgres_outage.py). The restarted loop gets a fresh connection.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


async def run_resilient(
    name: str,
    loop: Callable[[], Awaitable[None]],
    *,
    initial_s: float = 0.5,
    max_s: float = 30.0,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``loop`` until it returns, restarting it after dependency failures."""
    rng = rng or random.Random()
    clock = asyncio.get_running_loop().time
    failures = 0
    while True:
        started = clock()
        try:
            await loop()
            return
        except DEPENDENCY_ERRORS as error:
            failures = 1 if clock() - started > max_s else failures + 1
            delay = backoff_s(failures, initial_s, max_s, rng)
            log.warning(
                "background loop failed; restarting it",
                loop=name,
                error=f"{type(error).__name__}: {error}",
                failures=failures,
                retry_in_s=round(delay, 2),
            )
            await sleep(delay)
