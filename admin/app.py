"""The admin API's aiohttp application, built from the route table.

Invariants: the router holds exactly ``ROUTES`` (no implicit HEAD); every request passes the
audit (outermost: mutating and refused calls are recorded with the status sent), the error
middleware, then the bearer check; the caller owns and closes the pool and
the Redis client.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from redis.asyncio import Redis

from admin.audit import audit_middleware
from admin.auth import bearer_middleware
from admin.context import Deps
from admin.dispatch import bind
from admin.errors import errors_middleware
from admin.routes import PREFIX, ROUTES, public_paths
from config.settings import ConfigError, Settings
from store.crypto import Keyring
from store.db import PgPool

MAX_BODY_BYTES = 1 << 20


def _now() -> datetime:
    return datetime.now(UTC)


def require_token_hashes(settings: Settings) -> None:
    """ConfigError unless at least one token hash is configured."""
    if not settings.api_token_hashes:
        raise ConfigError(
            "invalid configuration: IW_API_TOKEN_HASHES: no token hash configured, so the admin"
            " API would refuse everyone; add one made by `integration-worker api hash-token`"
        )


def create_admin_app(
    pool: PgPool,
    redis: Redis,
    settings: Settings,
    keyring: Keyring,
    *,
    clock: Callable[[], datetime] = _now,
    open_prefixes: tuple[str, ...] = (),
) -> web.Application:
    """The admin API on an open pool and Redis client; ConfigError without token hashes.

    Paths under ``open_prefixes`` skip the bearer check: routes the caller adds beside the API
    (health probes, the OAuth flow a user's browser follows)."""
    require_token_hashes(settings)
    deps = Deps(pool=pool, redis=redis, settings=settings, keyring=keyring, clock=clock)
    app = web.Application(
        middlewares=[
            audit_middleware,  # outermost: it records the status the client got
            errors_middleware,
            bearer_middleware(settings.api_token_hashes, public_paths(), open_prefixes),
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    for route in ROUTES:
        app.router.add_route(route.method, PREFIX + route.path, bind(route, deps))
    return app
