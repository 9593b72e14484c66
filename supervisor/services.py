"""Where a replica's PostgreSQL and Redis are: configured URLs, or embedded servers started here.

Invariant: an embedded server started by ``open_services`` is stopped when its context exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from config.settings import ConfigError, Settings


@dataclass(frozen=True, slots=True)
class ServiceUrls:
    """Connection URLs; secrets inside them never reach logs (they are registered)."""

    database_url: str
    redis_url: str
    embedded: bool


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[ServiceUrls]:
    """Yield the configured URLs, starting embedded servers for whichever is not configured."""
    db = settings.database_url.get_secret_value() if settings.database_url else None
    redis = settings.redis_url.get_secret_value() if settings.redis_url else None
    if db is not None and redis is not None:
        yield ServiceUrls(db, redis, embedded=False)
        return
    try:
        # The sandbox is a checkout's package, not the wheel's: production sets both URLs.
        from sandbox.embedded import embedded_services  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            "invalid configuration: IW_DATABASE_URL/IW_REDIS_URL not set, and no embedded"
            f" servers here (missing module {exc.name!r}: the sandbox of a checkout's"
            " environment, made by `make install`)"
        ) from None
    with contextlib.ExitStack() as stack:
        # Starting servers blocks for a second or two: keep it off the event loop.
        services = await anyio.to_thread.run_sync(
            stack.enter_context, embedded_services(settings.embedded_dir)
        )
        try:
            yield ServiceUrls(
                db or services.database_url, redis or services.redis_url, embedded=True
            )
        finally:
            with anyio.CancelScope(shield=True):  # stop the servers even when cancelled
                await anyio.to_thread.run_sync(stack.close)
