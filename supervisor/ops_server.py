"""A replica's operations endpoints over HTTP: ``/healthz``, ``/readyz`` and ``/metrics``.

Invariants:
- it only observes: it holds no state of its own but the outbox figures' cache, and failing to
  bind its port is logged and leaves the replica running (its readiness probe then fails,
  which surfaces the mistake where it is watched);
- ``/healthz`` answers as long as the event loop runs; ``/readyz`` is 200 only when Postgres
  answers ``SELECT 1``, Redis answers ``PING`` (each within ``PROBE_TIMEOUT_S``) and the shard
  keeper holds shards or stands by as a live member, else 503 naming what failed;
- the replica's gauges are registered in this server's own registry, not the process one, so
  several replicas in one process (tests) never collide and nothing outlives the server;
- a scrape awaits the outbox query (cached) before rendering; rendering itself never waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry
from prometheus_client.exposition import generate_latest

from cluster.shard_keeper import ShardKeeper
from config.settings import Settings
from metrics.health import probe_all, probe_postgres, probe_redis, readiness, shard_standing
from supervisor.http_server import serving_ops
from supervisor.metric_collectors import ReplicaCollector, ReplicaState, combined
from supervisor.outbox_figures import OutboxFigures
from supervisor.replica import Replica

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"

KeeperSource = Callable[[], ShardKeeper | None]


@dataclass(frozen=True, slots=True)
class OpsServer:
    """Where a running ops server listens (``port`` is the bound one, also for port 0)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"


class _Handlers:
    def __init__(self, replica: Replica, keeper: KeeperSource, figures: OutboxFigures) -> None:
        self._replica = replica
        self._keeper = keeper
        self._figures = figures
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(ReplicaCollector(self._state))
        self._exposed = combined(REGISTRY, self._registry)

    def _state(self) -> ReplicaState:
        statistics = self._replica.supervisor.registry.statistics()
        keeper = self._keeper()
        return ReplicaState(
            actors_by_state=statistics.by_state,
            mailbox_depth=statistics.mailbox_depth,
            shards_owned=0 if keeper is None else len(keeper.owned()),
            outbox=self._figures.counts,
        )

    async def health(self, _request: web.Request) -> web.Response:
        """The process is alive and its loop serves requests."""
        return web.json_response({"status": "ok"})

    async def ready(self, _request: web.Request) -> web.Response:
        """Postgres and Redis answer, and shards are held or the replica stands by."""
        replica = self._replica
        # The actors' clients, never the keeper's own: a probe must not delay a lease renewal
        # or an epoch (replica.py); a pool saturated past the probe's timeout is unready anyway.
        checks = await probe_all(
            {"postgres": probe_postgres(replica.pool), "redis": probe_redis(replica.redis)}
        )
        keeper = self._keeper()
        if keeper is None:
            checks["shards"] = shard_standing(0, None)
        else:
            live = keeper.heartbeat_ok and keeper.replica_id in keeper.members
            checks["shards"] = shard_standing(len(keeper.owned()), live)
        status, body = readiness(checks)
        return web.json_response(body, status=status)

    async def scrape(self, _request: web.Request) -> web.Response:
        """The process's event metrics and this replica's gauges, in the text format."""
        await self._figures.refresh_if_stale()
        return web.Response(
            body=generate_latest(self._exposed),
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
        )


def create_ops_app(replica: Replica, keeper: KeeperSource) -> web.Application:
    """The ops application of ``replica``; ``keeper()`` is its shard keeper once running."""
    handlers = _Handlers(replica, keeper, OutboxFigures(replica.pool))
    app = web.Application()
    app.router.add_get(HEALTH_PATH, handlers.health)
    app.router.add_get(READY_PATH, handlers.ready)
    app.router.add_get(METRICS_PATH, handlers.scrape)
    return app


@contextlib.asynccontextmanager
async def open_ops_server(
    settings: Settings, replica: Replica, keeper: KeeperSource
) -> AsyncIterator[OpsServer | None]:
    """Serve the ops endpoints on ``ops_host:ops_port`` while the block runs; None when
    disabled or when the port cannot be bound (logged)."""
    app = create_ops_app(replica, keeper)
    async with serving_ops(app, settings, name="ops server") as bound:
        yield None if bound is None else OpsServer(*bound)
