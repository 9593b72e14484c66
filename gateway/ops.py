"""The gateway's operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``, served on
the ops port (``IW_OPS_HOST``/``IW_OPS_PORT``), never beside the webhooks.

The webhook listener faces the internet; the probes and the metrics are for the cluster only, so
they live on a listener of their own that an Ingress never routes to.

Invariants:
- ``/healthz`` probes nothing; ``/readyz`` probes Postgres and Redis, one probe at a time, and
  reuses an answer for ``READY_CACHE_S``, so any number of probes costs each dependency at most
  one query per period;
- ``/metrics`` renders the process's registry (docs/metrics.md), the gateway's counters included.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from redis.asyncio import Redis

from metrics.health import probe_all, probe_postgres, probe_redis, readiness
from store.db import Queryable

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
READY_CACHE_S = 1.0  # a readiness answer is reused this long


class _Ops:
    def __init__(self, pool: Queryable, redis: Redis) -> None:
        self._pool = pool
        self._redis = redis
        self._ready: tuple[float, dict[str, str]] | None = None  # (loop time, checks)
        self._ready_lock = asyncio.Lock()

    async def health(self, _request: web.Request) -> web.Response:
        """The process serves requests (dependencies are not probed)."""
        return web.json_response({"status": "ok"})

    async def ready(self, _request: web.Request) -> web.Response:
        """200 when Postgres and Redis answer, else 503 naming the failures."""
        async with self._ready_lock:
            loop = asyncio.get_running_loop()
            if self._ready is None or loop.time() - self._ready[0] >= READY_CACHE_S:
                checks = await probe_all(
                    {"postgres": probe_postgres(self._pool), "redis": probe_redis(self._redis)}
                )
                self._ready = (loop.time(), checks)
            checks = self._ready[1]
        status, body = readiness(checks)
        return web.json_response(body, status=status)

    async def scrape(self, _request: web.Request) -> web.Response:
        """The process's metrics in Prometheus' text format."""
        return web.Response(
            body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )


def create_ops_app(pool: Queryable, redis: Redis) -> web.Application:
    """The gateway's ops application on an open pool and Redis client (the caller closes both)."""
    ops = _Ops(pool, redis)
    app = web.Application()
    app.router.add_get(HEALTH_PATH, ops.health)
    app.router.add_get(READY_PATH, ops.ready)
    app.router.add_get(METRICS_PATH, ops.scrape)
    return app
