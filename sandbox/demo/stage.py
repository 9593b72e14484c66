"""The stage: the in-process gateway and the running demo's handles, with the waits on them.

Invariants:
- the gateway has its own pool and Redis client, as in production; everything opened here is
  pushed on the caller's exit stack, closed in reverse order;
- ``Stage.settled`` is true only when no demo actor has work within the settle horizon (busy,
  starting, restarting, or a deadline due soon), no notification waits in a shard stream and
  every demo account is shown synced; the 15-minute poll and push renewals lie beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis

from actors.account.messages import SyncNow
from cluster.keys import NOTIFICATIONS_GROUP, notifications_key
from gateway.app import STATS, GatewayStatistics, create_app
from providers.interface import CalendarProvider
from sandbox.demo.faults import FaultInjector
from sandbox.demo.journal import EditJournal
from sandbox.demo.seeding import DemoAccount
from sandbox.demo.status import Gauges
from store.crypto import Keyring
from store.db import PgPool, create_pool
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.replica import Replica
from supervisor.services import ServiceUrls

SETTLE_HORIZON_S = 20.0
_UNSETTLED = frozenset({"starting", "busy", "backoff", "held"})


async def start_gateway(
    stack: contextlib.AsyncExitStack, urls: ServiceUrls, schema: str
) -> tuple[str, GatewayStatistics]:
    """The webhook gateway on a loopback port: its base URL and its counters."""
    pool = await create_pool(urls.database_url, schema)
    stack.push_async_callback(pool.close)
    redis = Redis.from_url(urls.redis_url)
    stack.push_async_callback(redis.aclose)
    app = create_app(pool, redis)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}", app[STATS]


@dataclass(slots=True)
class Stage:
    """Everything the phases of a running demo look at."""

    replica: Replica
    runtime: AccountsRuntime
    runtime_task: asyncio.Task[None]
    clients: Mapping[str, CalendarProvider]
    keyring: Keyring
    journal: EditJournal
    injector: FaultInjector
    gauges: Gauges

    @property
    def accounts(self) -> list[DemoAccount]:
        return self.gauges.accounts

    @property
    def pool(self) -> PgPool:
        return self.replica.pool

    def check_runtime(self) -> None:
        """Raise the runtime's error if it stopped (it only stops by failing)."""
        if self.runtime_task.done() and not self.runtime_task.cancelled():
            error = self.runtime_task.exception()
            raise RuntimeError(f"the accounts runtime stopped: {error!r}") from error

    async def watching(self) -> int:
        """Demo accounts with at least one push channel open."""
        value = await self.pool.fetchval(
            "SELECT count(DISTINCT account_id) FROM push_channels"
            " WHERE account_id = ANY($1::uuid[])",
            [a.id for a in self.accounts],
        )
        return int(value)

    async def stream_pending(self) -> int:
        """Notifications delivered to the replica and not yet acknowledged, over all shards."""
        redis = self.replica.redis
        total = 0
        for shard in range(self.replica.settings.shard_count):
            with contextlib.suppress(Exception):  # no stream or group yet: nothing pending
                info = await redis.xpending(notifications_key(shard), NOTIFICATIONS_GROUP)
                total += int(info["pending"])
        return total

    def work_due(self) -> int:
        """Demo actors busy, (re)starting, or with a deadline due within the settle horizon."""
        due = 0
        for snap in self.gauges.snapshots():
            if snap.state in _UNSETTLED or any(
                left <= SETTLE_HORIZON_S for _, left in snap.deadlines
            ):
                due += 1
        return due

    def nudge_retrying(self) -> None:
        """Ask actors waiting to retry after a (now cleared) fault to sync now."""
        for snap in self.gauges.snapshots():
            if (snap.status or "").startswith("retry"):
                with contextlib.suppress(Exception):  # gone meanwhile: nothing to nudge
                    self.replica.supervisor.post_nowait(snap.id, SyncNow())

    async def unsettled(self) -> int:
        """How much work is left before the database can match the emulators."""
        states = self.gauges.states()
        not_synced = len(self.accounts) - states.get("synced", 0)
        depth = self.replica.supervisor.registry.statistics().mailbox_depth
        return depth + self.work_due() + not_synced + await self.stream_pending()
