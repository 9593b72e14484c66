"""Shared fixtures: real Postgres and Redis for the whole session, a fresh database per test.

Session-scoped fixtures are synchronous (no event loop outlives a test); anything async is
function-scoped and runs on the test's own loop.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest
import structlog
from redis.asyncio import Redis

from config.logs import configure_logging
from sandbox.embedded import Services, embedded_services
from store.crypto import Keyring, generate_key
from store.db import DEFAULT_SCHEMA, PgPool, create_pool, dsn_with_database, quote_ident
from store.migrate import migrate

SCHEMA = DEFAULT_SCHEMA

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop, leaving the current event loop (if any) untouched."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (optionally from ``template``) and return its DSN."""
    sql = f"CREATE DATABASE {quote_ident(name)}"
    if template is not None:
        sql += f" TEMPLATE {quote_ident(template)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
    return dsn_with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name``; WITH (FORCE) terminates connections a test left open."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark the main thread's event loop as explicitly unset before any test runs."""
    # looptime's pytest_pyfunc_call asks the policy for the current loop before every test,
    # sync ones included. Before any loop was ever set, that call *creates* one, which
    # pytest-asyncio's runner later replaces without closing: an unclosed-loop ResourceWarning,
    # an error under filterwarnings=error. Once set_event_loop(None) was called it raises instead.
    asyncio.set_event_loop(None)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """IW_DATABASE_URL/IW_REDIS_URL if both are set, else embedded servers for the session."""
    database_url = os.environ.get("IW_DATABASE_URL")
    redis_url = os.environ.get("IW_REDIS_URL")
    if database_url and redis_url:
        yield Services(database_url=database_url, redis_url=redis_url)
        return
    with embedded_services() as embedded:
        yield embedded


@pytest.fixture(scope="session")
def template_database(services: Services) -> Iterator[str]:
    """Name of a database migrated once per session, cloned by ``database_url``."""
    name = f"iw_template_{secrets.token_hex(4)}"
    dsn = run_sync(create_database(services.database_url, name))
    try:
        run_sync(migrate(dsn, SCHEMA))
        yield name
    finally:
        run_sync(drop_database(services.database_url, name))


@pytest.fixture
async def database_url(services: Services, template_database: str) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database for this test only."""
    name = f"iw_test_{secrets.token_hex(6)}"
    dsn = await create_database(services.database_url, name, template=template_database)
    try:
        yield dsn
    finally:
        await drop_database(services.database_url, name)


@pytest.fixture
async def empty_database_url(services: Services) -> AsyncIterator[str]:
    """A fresh database that no migration has touched."""
    name = f"iw_empty_{secrets.token_hex(6)}"
    dsn = await create_database(services.database_url, name)
    try:
        yield dsn
    finally:
        await drop_database(services.database_url, name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[PgPool]:
    """A pool on this test's database with ``search_path`` set to the service schema."""
    db_pool = await create_pool(database_url, SCHEMA, min_size=1, max_size=5)
    try:
        yield db_pool
    finally:
        await db_pool.close()


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    """A client on the session's Redis, emptied before the test."""
    client = Redis.from_url(services.redis_url)
    try:
        await client.flushall()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def keyring() -> Keyring:
    """Two random keys; "k1" is active, "k0" only decrypts."""
    return Keyring("k1", {"k0": generate_key(), "k1": generate_key()})


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """JSON logging into a StringIO; restores global logging state afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    yield out
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()
