"""Slow and numerous clients against the internet-facing listeners (the gateway and the admin
API, served by ``supervisor.http_server`` on loopback with small limits): each attack is
performed over raw sockets and the listener must end it within its deadline.

Before: 200 connections with half-sent headers and 50 stalled bodies were still open after
75 s, and 100 stalled near-1 MiB uploads held 97 MiB until the clients left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from gateway.app import BODIES, create_app
from metrics import events as metrics
from store.crypto import Keyring
from store.db import PgPool
from supervisor.http_server import HttpLimits, serving
from tests.support.admin_server import TOKEN, admin_settings

DEADLINE_S = 0.5
LIMITS = HttpLimits(request_timeout_s=DEADLINE_S, max_connections=8)
# Generous: the listener must act within its deadline; this only bounds a test that failed.
WAIT_S = 10 * DEADLINE_S + 5
GATEWAYS: list[web.Application] = []  # the apps served, newest last


@contextlib.asynccontextmanager
async def gateway(
    pool: PgPool, redis: Redis, *, bodies: int = 64, body_deadline_s: float = DEADLINE_S
) -> AsyncIterator[tuple[str, int]]:
    app = create_app(
        pool,
        redis,
        max_body_bytes=1 << 20,
        body_deadline_s=body_deadline_s,
        max_bodies_in_flight=bodies,
    )
    async with serving(app, host="127.0.0.1", port=0, limits=LIMITS, name="gateway") as address:
        GATEWAYS.append(app)
        yield address


async def _open(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address)


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (fails the test past
    ``WAIT_S``)."""
    async with asyncio.timeout(WAIT_S):
        return await reader.read()


async def test_half_sent_headers_are_cut_off(pool: PgPool, redis: Redis) -> None:
    async with gateway(pool, redis) as address:
        connections = [await _open(address) for _ in range(5)]
        for _, writer in connections:
            writer.write(b"POST /webhooks/google HTTP/1.1\r\nHost: gw\r\nX-Goog-Chan")
            await writer.drain()
        for reader, writer in connections:
            assert await _closed_by_server(reader) == b""  # closed, nothing answered
            writer.close()


async def test_a_stalled_body_is_answered_408_and_closed(pool: PgPool, redis: Redis) -> None:
    shed = metrics.http_requests_shed.labels("gateway", "slow_body")
    before = shed._value.get()
    async with gateway(pool, redis) as address:
        reader, writer = await _open(address)
        writer.write(
            b"POST /webhooks/microsoft HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b'Content-Length: 900000\r\n\r\n{"value": ['
        )
        await writer.drain()
        answer = await _closed_by_server(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert shed._value.get() == before + 1


async def test_bodies_in_flight_are_capped_with_503(pool: PgPool, redis: Redis) -> None:
    # A body deadline long enough that the two uploads surely still hold their slots.
    async with gateway(pool, redis, bodies=2, body_deadline_s=5.0) as address:
        stalled = [await _stall_upload(address) for _ in range(2)]
        await _wait_bodies(GATEWAYS[-1], 2)  # both uploads are being read
        reader, writer = await _open(address)
        writer.write(
            b"POST /webhooks/microsoft HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json"
            b"\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        assert (await _closed_by_server(reader)).startswith(b"HTTP/1.1 503")  # retried later
        writer.close()
        for held, held_writer in stalled:
            assert (await _closed_by_server(held)).startswith(b"HTTP/1.1 408")
            held_writer.close()


async def _stall_upload(
    address: tuple[str, int],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection in a request: its headers sent, its body stalled after one byte."""
    reader, writer = await _open(address)
    writer.write(
        b"POST /webhooks/microsoft HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def _wait_bodies(app: web.Application, count: int) -> None:
    budget = app[BODIES]
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while budget.in_flight < count:
        assert asyncio.get_running_loop().time() < deadline, "the uploads never started"
        await asyncio.sleep(0.01)


async def test_past_the_cap_the_longest_idle_connection_makes_room(
    pool: PgPool, redis: Redis
) -> None:
    # Before: the new connection was closed even while idle keep-alive connections held the
    # slots, so a few idle clients locked everyone else out until their keep-alive ended.
    evicted = metrics.http_connections_evicted.labels("gateway")
    before = evicted._value.get()
    async with gateway(pool, redis, body_deadline_s=5.0) as address:
        idle_reader, idle_writer = await _open(address)  # one request, then kept alive
        idle_writer.write(b"GET /webhooks/google HTTP/1.1\r\nHost: gw\r\n\r\n")
        await idle_writer.drain()
        assert (await idle_reader.readline()).startswith(b"HTTP/1.1 405")
        fresh_reader, fresh_writer = await _open(address)  # open, nothing sent yet
        busy = [await _stall_upload(address) for _ in range(LIMITS.max_connections - 2)]
        await _wait_bodies(GATEWAYS[-1], len(busy))
        # The cap is reached; a new client is admitted and the longest idle one goes.
        reader, writer = await _open(address)
        await _closed_by_server(idle_reader)  # EOF: the kept-alive connection was closed
        writer.write(b"GET /webhooks/google HTTP/1.1\r\nHost: gw\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(WAIT_S):
            assert (await reader.readline()).startswith(b"HTTP/1.1 405")
        assert evicted._value.get() == before + 1
        # The uploads, in a request, were never candidates; the unsent one was next in line.
        assert not fresh_reader.at_eof()
        assert not any(held.at_eof() for held, _ in busy)
        for w in (idle_writer, fresh_writer, writer, *(w for _, w in busy)):
            w.close()


async def test_past_the_cap_with_every_connection_busy_the_new_one_is_closed(
    pool: PgPool, redis: Redis
) -> None:
    refused = metrics.http_connections_refused.labels("gateway")
    before = refused._value.get()
    async with gateway(pool, redis, body_deadline_s=5.0) as address:
        busy = [await _stall_upload(address) for _ in range(LIMITS.max_connections)]
        await _wait_bodies(GATEWAYS[-1], len(busy))
        reader, writer = await _open(address)
        assert await _closed_by_server(reader) == b""
        writer.close()
        assert refused._value.get() == before + 1
        assert not any(held.at_eof() for held, _ in busy)
        for _, held_writer in busy:
            held_writer.close()


async def test_the_admin_api_cuts_off_slow_clients_too(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    from admin.app import create_admin_app  # noqa: PLC0415 - this test alone serves it

    settings = admin_settings(http_request_timeout_s=DEADLINE_S)
    app = create_admin_app(pool, redis, settings, keyring)
    async with serving(app, host="127.0.0.1", port=0, limits=LIMITS, name="api") as address:
        reader, writer = await _open(address)
        writer.write(b"GET /api/v1/accounts HTTP/1.1\r\nHost: api\r\nAuthor")
        await writer.drain()
        assert await _closed_by_server(reader) == b""
        writer.close()
        reader, writer = await _open(address)
        writer.write(
            b"POST /api/v1/accounts HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"
        )
        await writer.drain()
        async with asyncio.timeout(WAIT_S):
            status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 408")
        writer.close()
