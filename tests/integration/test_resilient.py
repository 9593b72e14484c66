"""Background loops survive dependency outages: a real Redis connection failure restarts the
loop after a growing backoff; a bug still ends it."""

from __future__ import annotations

import random
import socket

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from supervisor.resilient import run_resilient


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_loop_that_loses_redis_is_restarted_with_backoff(redis: Redis) -> None:
    unreachable = Redis(
        host="127.0.0.1",
        port=closed_port(),
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    runs: list[str] = []
    naps: list[float] = []

    async def loop() -> None:
        runs.append("run")
        client = unreachable if len(runs) <= 3 else redis  # "Redis" comes back on the 4th run
        await client.ping()

    async def nap(seconds: float) -> None:
        naps.append(seconds)

    try:
        await run_resilient(
            "test", loop, initial_s=1.0, max_s=30.0, rng=random.Random(1), sleep=nap
        )
    finally:
        await unreachable.aclose()
    assert len(runs) == 4
    assert len(naps) == 3
    assert 0.5 <= naps[0] <= 1.0 and 1.0 <= naps[1] <= 2.0 and 2.0 <= naps[2] <= 4.0


async def test_a_bug_is_not_retried() -> None:
    async def loop() -> None:
        raise KeyError("a bug")

    async def nap(seconds: float) -> None:
        raise AssertionError("must not retry a bug")

    with pytest.raises(KeyError):
        await run_resilient("test", loop, sleep=nap)
