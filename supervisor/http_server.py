"""Serving aiohttp applications: the internet-facing listeners (the gateway's webhooks, the
admin API) and the cluster-internal ops listeners (probes and metrics).

aiohttp alone lets a client hold a connection for as long as it likes by sending its headers
slowly, and accepts any number of connections. Here:

Invariants:
- a connection that has not delivered a complete request's headers ``request_timeout_s`` after
  it opened (or after its previous answer) is closed: aiohttp's keep-alive timer, which 3.14
  arms at connection start and closes an idle handler with, is set to that deadline;
- at most ``max_connections`` connections are open at once: past the cap the longest-idle
  connection (keep-alive between requests, or still sending its headers) is closed, or, when
  every one is in a request, the new one (both counted), so a flood of idle or stalled
  connections cannot exhaust memory or sockets nor lock out new clients;
- reading a request's body has its own deadline, applied where the body is read
  (``gateway.limits.read_body``, the admin API's dispatch); after an answer that leaves a body
  unread, the connection lingers at most ``LINGER_S`` before it is closed;
- the access log is off: its lines would carry query strings (Graph's validation tokens);
- an ops listener that cannot bind its port is logged and yields None: the process keeps
  running and its readiness probe fails, which surfaces the mistake where it is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from config.settings import Settings
from metrics import events as metrics

log = structlog.get_logger("supervisor.http")


LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one listener allows a client."""

    request_timeout_s: float = 10.0
    max_connections: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """``IW_HTTP_REQUEST_TIMEOUT_S`` and ``IW_HTTP_MAX_CONNECTIONS``."""
        return cls(settings.http_request_timeout_s, settings.http_max_connections)


def cap_connections(server: web.Server, limit: int, name: str) -> None:
    """Keep ``server`` at most ``limit`` connections: past it, the connection idle longest (a
    keep-alive one between requests, or one still sending its headers) is closed to make room;
    when every connection is in a request, the new one is closed instead."""
    made = server.connection_made

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        made(handler, transport)
        if len(server.connections) <= limit:
            return
        idle = [(since, h) for h in server.connections if (since := idle_since(h)) is not None]
        if idle:
            _, longest = min(idle, key=lambda pair: pair[0])
            metrics.http_connections_evicted.labels(name).inc()
            longest.force_close()
        else:
            metrics.http_connections_refused.labels(name).inc()
            transport.close()  # its handler goes with it (connection_lost)

    server.connection_made = connection_made  # type: ignore[method-assign]


def idle_since(handler: RequestHandler) -> float | None:
    """An order of how long ``handler`` has been idle (smaller: longer), or None while it is
    in a request or just opened.

    aiohttp exposes no idle state, so this reads its handler's internals: it waits on
    ``_waiter`` for a complete request when idle, and ``_next_keepalive_close_time`` is its
    last activity plus the keep-alive timeout. ``tests/integration/test_slow_clients.py`` pins
    the behaviour; on an aiohttp without these attributes nothing counts as idle and the cap
    closes the newest connection, as before."""
    if getattr(handler, "_request_in_progress", True) or getattr(handler, "_messages", True):
        return None
    waiter = getattr(handler, "_waiter", None)
    if waiter is None or waiter.done():
        return None
    since = getattr(handler, "_next_keepalive_close_time", None)
    return since if isinstance(since, float) else None


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, *, host: str, port: int, limits: HttpLimits, name: str
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``app`` on ``host:port`` within ``limits`` while the block runs; yields the
    address bound (port 0: any free one)."""
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=limits.request_timeout_s,
        # After refusing an unread body, read and drop what still comes for at most this long
        # before closing (so the client sees the answer, not a reset), never aiohttp's 10 s.
        lingering_time=min(LINGER_S, limits.request_timeout_s),
    )
    await runner.setup()
    try:
        assert runner.server is not None
        cap_connections(runner.server, limits.max_connections, name)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        log.info(f"{name} listening", host=bound_host, port=bound_port)
        yield bound_host, bound_port
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def run_app(
    app: web.Application, *, host: str, port: int, limits: HttpLimits, name: str
) -> None:
    """Serve ``app`` on ``host:port`` within ``limits`` until cancelled."""
    async with serving(app, host=host, port=port, limits=limits, name=name):
        await anyio.sleep_forever()


@contextlib.asynccontextmanager
async def serving_ops(
    app: web.Application, settings: Settings, *, name: str
) -> AsyncIterator[tuple[str, int] | None]:
    """Serve ``app`` on ``IW_OPS_HOST:IW_OPS_PORT`` while the block runs; yields the address
    bound, or None when ``IW_OPS_ENABLED`` is off or the port cannot be bound (logged)."""
    if not settings.ops_enabled:
        yield None
        return
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        bound: tuple[str, int] | None = None
        try:
            await web.TCPSite(runner, settings.ops_host, settings.ops_port).start()
        except OSError as exc:
            log.warning(
                f"{name} not started",
                host=settings.ops_host,
                port=settings.ops_port,
                error=type(exc).__name__,
            )
        else:
            bound = (settings.ops_host, int(runner.addresses[0][1]))
            log.info(f"{name} listening", host=bound[0], port=bound[1])
        yield bound
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
