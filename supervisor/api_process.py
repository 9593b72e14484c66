"""Run the admin API process until cancelled: ``integration-worker api``.

The process serves the API (``/api/v1``, bearer tokens), ``/healthz`` and ``/readyz`` (Postgres
and Redis reachable), and, when enabled, the OAuth connect flow (``/oauth/...``, which users'
browsers reach without a token: expose only that prefix publicly).

Invariants: stateless like the gateway (any number of processes); a configured database's
schema is never changed (only an embedded throwaway one is migrated); the socket, the HTTP
session, the Redis client and the pool are closed when ``serve`` returns or is cancelled;
aiohttp's access log is off (query strings, OAuth codes included, stay out of the logs).
"""

from __future__ import annotations

import aiohttp
import anyio
import structlog
from aiohttp import web
from redis.asyncio import Redis

from admin.app import create_admin_app
from config.settings import Settings
from connect import add_connect_routes
from kinds import default_registry
from metrics.health import probe_all, probe_postgres, probe_redis, readiness
from providers.http import HttpSettings, create_session
from store.crypto import Keyring
from store.db import PgPool, create_pool
from store.migrate import migrate
from supervisor.http_server import HttpLimits, run_app
from supervisor.services import open_services

log = structlog.get_logger("admin")


# Served without a bearer token: probes, and the OAuth flow's browser endpoints.
HEALTH_PATH, READY_PATH, OAUTH_PREFIX = "/healthz", "/readyz", "/oauth/"


def create_server_app(
    pool: PgPool,
    redis: Redis,
    settings: Settings,
    keyring: Keyring,
    session: aiohttp.ClientSession,
) -> web.Application:
    """The process's application: the API, its probes and (if enabled) the OAuth flow."""
    app = create_admin_app(
        pool, redis, settings, keyring, open_prefixes=(HEALTH_PATH, READY_PATH, OAUTH_PREFIX)
    )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        checks = await probe_all({"postgres": probe_postgres(pool), "redis": probe_redis(redis)})
        status, body = readiness(checks)
        return web.json_response(body, status=status)

    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(READY_PATH, readyz)
    add_connect_routes(app, settings, pool, keyring, session)
    return app


async def serve(settings: Settings, keyring: Keyring, *, host: str, port: int) -> None:
    """Open Postgres and Redis from ``settings`` and serve the admin API until cancelled."""
    async with open_services(settings) as urls:
        if urls.embedded:
            await migrate(
                urls.database_url, settings.db_schema, kinds=default_registry().catalog()
            )  # a fresh throwaway database
        pool = await create_pool(urls.database_url, settings.db_schema)
        redis = Redis.from_url(urls.redis_url)
        session = create_session(HttpSettings(ca_bundle=settings.ca_bundle))
        app = create_server_app(pool, redis, settings, keyring, session)
        try:
            limits = HttpLimits.from_settings(settings)
            await run_app(app, host=host, port=port, limits=limits, name="admin API")
        finally:
            with anyio.CancelScope(shield=True):
                await session.close()
                await redis.aclose()
                await pool.close()
