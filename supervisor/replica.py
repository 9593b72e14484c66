"""One replica's lifetime: storage, the actor supervisor, the monitor, and orderly shutdown.

Invariants:
- everything started here is stopped here, in reverse order, on a stop request or an error;
- a quarantined account is marked in PostgreSQL with its last error before the actor parks;
- Redis is reached through two clients: ``redis`` for the actors' traffic (a bounded pool whose
  callers wait for a free connection: a takeover's burst of hundreds of calls queues instead of
  failing), and ``lease_redis`` with connections of its own for heartbeats and leases, so
  that burst can never delay a renewal past the lease's stop point; likewise Postgres:
  ``control_pool`` takes epochs without queueing behind the actors' syncs in ``pool``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import asyncpg
import redis.asyncio as aioredis
import structlog

from actors.circuit import CircuitPolicy
from actors.policy import RestartPolicy
from actors.supervisor import Supervisor
from config.settings import Settings
from kinds import default_registry
from store.accounts import mark_quarantined
from store.db import create_pool
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
    lease_redis: aioredis.Redis | None = None  # None: share ``redis`` (tests, tools)
    control_pool: asyncpg.Pool | None = None  # the keeper's own (epochs); None: share ``pool``
    database_url: str | None = None  # for connections of their own (LISTEN); None: no listener


# The keeper makes one call at a time; two leave room for an abandoned one (see ShardKeeper).
_LEASE_CONNECTIONS = 2
# How long a call waits for a free pooled connection before it counts as Redis unreachable.
_POOL_WAIT_S = 10.0


def open_redis(url: str, max_connections: int) -> aioredis.Redis:
    """A client whose callers wait (up to ``_POOL_WAIT_S``) for one of ``max_connections``.

    redis-py's default pool refuses a call outright once its connections are all busy, which
    a replica starting hundreds of actors hits at once."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=_POOL_WAIT_S
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


def restart_policy(settings: Settings) -> RestartPolicy:
    """The per-actor restart budget and backoff from settings."""
    return RestartPolicy(
        max_restarts=settings.restart_max,
        period_s=settings.restart_period_s,
        backoff_initial_s=settings.restart_backoff_initial_s,
        backoff_max_s=settings.restart_backoff_max_s,
    )


@contextlib.asynccontextmanager
async def open_replica(settings: Settings, urls: ServiceUrls) -> AsyncIterator[Replica]:
    """Migrate, connect, start the supervisor (and monitor); tear all down on exit."""
    applied = await migrate(
        urls.database_url, settings.db_schema, kinds=default_registry().catalog()
    )
    if applied:
        log.info("migrations applied", versions=applied)
    pool = await create_pool(urls.database_url, settings.db_schema)
    control_pool = await create_pool(urls.database_url, settings.db_schema, max_size=1)
    redis = open_redis(urls.redis_url, settings.redis_max_connections)
    lease_redis = open_redis(urls.redis_url, _LEASE_CONNECTIONS)

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
                if monitor is not None:
                    log.info(
                        "monitor listening", host=settings.monitor_host, port=settings.monitor_port
                    )
            try:
                yield Replica(
                    settings,
                    pool,
                    redis,
                    supervisor,
                    monitor,
                    lease_redis=lease_redis,
                    control_pool=control_pool,
                    database_url=urls.database_url,
                )
            finally:
                with anyio.CancelScope(shield=True):  # a stop request must not cut teardown
                    await supervisor.shutdown()
                if monitor is not None:
                    monitor.close()
    finally:
        with anyio.CancelScope(shield=True):
            await lease_redis.aclose()
            await redis.aclose()
            await control_pool.close()
            await pool.close()
