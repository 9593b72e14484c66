"""Readiness probes (``/readyz``) shared by the replica's ops server and the gateway.

Invariants:
- every probe is bounded by its timeout and answers a reason string instead of raising, so a
  hung dependency makes ``/readyz`` a prompt 503, never a hung request;
- reasons name the failure's type only: an exception's text may carry a URL or a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from redis.asyncio import Redis


class Queryable(Protocol):
    """What a probe needs of a Postgres pool (asyncpg's pools and connections have it)."""

    def fetchval(self, query: str, *args: Any) -> Awaitable[Any]: ...


PROBE_TIMEOUT_S = 1.0
OK = "ok"


async def _bounded(check: Awaitable[Any], timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            await check
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except Exception as exc:  # any failure is "not ready"; its type says enough
        return f"unreachable ({type(exc).__name__})"
    return OK


async def probe_postgres(pool: Queryable, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """``ok``, or why ``SELECT 1`` failed."""
    return await _bounded(pool.fetchval("SELECT 1"), timeout_s)


async def probe_redis(redis: Redis, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """``ok``, or why ``PING`` failed."""
    return await _bounded(redis.ping(), timeout_s)


def shard_standing(owned: int, live_member: bool | None) -> str:
    """A replica's shard readiness: holding shards, or standing by as a live member.

    ``live_member`` None means the keeper has not started yet."""
    if owned:
        return OK
    if live_member is None:
        return "shard keeper not started"
    return OK if live_member else "not a live member (no heartbeat answered)"


def readiness(checks: Mapping[str, str]) -> tuple[int, dict[str, object]]:
    """(HTTP status, JSON body): 200 when every check is ``ok``, else 503 naming the failures."""
    failed = {name: reason for name, reason in checks.items() if reason != OK}
    body: dict[str, object] = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        body["failed"] = sorted(failed)
    return (503 if failed else 200), body


async def probe_all(probes: Mapping[str, Awaitable[str]]) -> dict[str, str]:
    """Run the probes together: a slow one does not add its timeout to the others'."""
    names = list(probes)
    results = await asyncio.gather(*(probes[name] for name in names))
    return dict(zip(names, results, strict=True))
