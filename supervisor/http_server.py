"""Serving an aiohttp application to the internet: the gateway's and the admin API's listener.

aiohttp alone lets a client hold a connection for as long as it likes by sending its headers
slowly, and accepts any number of connections. Here:

Invariants:
- a connection that has not delivered a complete request's headers ``request_timeout_s`` after
  it opened (or after its previous answer) is closed: aiohttp's keep-alive timer, which 3.14
  arms at connection start and closes an idle handler with, is set to that deadline;
- at most ``max_connections`` connections are open at once: the one past the cap is closed at
  once (counted), so a flood of idle or stalled connections cannot exhaust memory or sockets;
- reading a request's body has its own deadline, applied where the body is read
  (``gateway.limits.read_body``, the admin API's dispatch); after an answer that leaves a body
  unread, the connection lingers at most ``LINGER_S`` before it is closed;
- the access log is off: its lines would carry query strings (Graph's validation tokens).
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
    """Close every connection that would make ``server`` hold more than ``limit``."""
    made = server.connection_made

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        made(handler, transport)
        if len(server.connections) > limit:
            metrics.http_connections_refused.labels(name).inc()
            transport.close()  # its handler goes with it (connection_lost)

    server.connection_made = connection_made  # type: ignore[method-assign]


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
