"""One replica's lifetime: storage, the actor supervisor, the monitor, and orderly shutdown.

Invariants:
- everything started here is stopped here, in reverse order, on a stop request or an error;
- a quarantined account is marked in PostgreSQL with its last error before the actor parks.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import asyncpg
import redis.asyncio as aioredis
import structlog

from actors.circuit import CircuitPolicy
from actors.policy import RestartPolicy
from actors.supervisor import Supervisor
from config.settings import Settings
from store.accounts import mark_quarantined
from store.db import create_pool
from store.fencing import install_fault_hold
from store.migrate import migrate
from supervisor.monitor import ReplicaMonitor, start_monitor
from supervisor.services import ServiceUrls

log = structlog.get_logger("supervisor.replica")


@dataclass(slots=True)
class Replica:
    """What a running replica holds; handed to whatever populates it with actors."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    supervisor: Supervisor
    monitor: ReplicaMonitor | None


def restart_policy(settings: Settings) -> RestartPolicy:
    """The per-actor restart budget and backoff from settings."""
    return RestartPolicy(
        max_restarts=settings.restart_max,
        period_s=settings.restart_period_s,
        backoff_initial_s=settings.restart_backoff_initial_s,
        backoff_max_s=settings.restart_backoff_max_s,
    )


async def hold_while_exists(path: Path, poll_s: float = 0.05) -> None:
    """Wait while ``path`` exists (the split-brain fault hook)."""
    held = anyio.Path(path)
    if await held.exists():
        log.warning("fenced write held (fault injection)")
    # Another process removes the file, so there is no event to wait on: poll it.
    while await held.exists():  # noqa: ASYNC110
        await anyio.sleep(poll_s)


@contextlib.asynccontextmanager
async def open_replica(settings: Settings, urls: ServiceUrls) -> AsyncIterator[Replica]:
    """Migrate, connect, start the supervisor (and monitor); tear all down on exit."""
    applied = await migrate(urls.database_url, settings.db_schema)
    if applied:
        log.info("migrations applied", versions=applied)
    pool = await create_pool(urls.database_url, settings.db_schema)
    redis = aioredis.Redis.from_url(urls.redis_url)
    if settings.fault_hold_file is not None:
        log.warning("fault injection on: fenced writes wait while the file exists")
        install_fault_hold(partial(hold_while_exists, settings.fault_hold_file))

    async def quarantine(child_id: str, reason: str) -> None:
        try:
            account_id = uuid.UUID(child_id)
        except ValueError:
            return  # not an account actor
        await mark_quarantined(pool, account_id, reason)

    try:
        await redis.ping()
        async with Supervisor(
            name=f"replica[{settings.replica_id}]",
            policy=restart_policy(settings),
            circuit=CircuitPolicy(),
            mailbox_capacity=settings.mailbox_capacity,
            shutdown_timeout_s=settings.shutdown_timeout_s,
            on_quarantine=quarantine,
        ) as supervisor:
            monitor = None
            if settings.monitor_enabled:
                monitor = start_monitor(
                    supervisor,
                    host=settings.monitor_host,
                    port=settings.monitor_port,
                    webui_port=settings.monitor_webui_port,
                    console_port=settings.monitor_console_port,
                    locals_={"supervisor": supervisor},
                )
                log.info(
                    "monitor listening", host=settings.monitor_host, port=settings.monitor_port
                )
            try:
                yield Replica(settings, pool, redis, supervisor, monitor)
            finally:
                with anyio.CancelScope(shield=True):  # a stop request must not cut teardown
                    await supervisor.shutdown()
                if monitor is not None:
                    monitor.close()
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()
            await pool.close()
