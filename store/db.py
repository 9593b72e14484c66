"""asyncpg pools bound to one schema, and small SQL helpers.

Invariants:
- Every pool connection has ``search_path = <schema>, public``, so queries never name the schema.
- A schema name is validated before use and always double-quoted in DDL.
- Pool connections carry no session state between uses: no SET, LISTEN, cursor or session
  advisory lock outlives a transaction (locks are ``pg_advisory_xact_lock``). So a released
  connection only has its transaction rolled back, without asyncpg's reset query, which would
  cost a round trip on every release; anything that needs session state opens its own
  connection.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

DEFAULT_SCHEMA = "integration_worker"
APPLICATION_NAME = "integration-worker"

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# asyncpg's classes are generic only in its stubs, so the aliases are strings.
PgPool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
PgPoolConnection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


class Queryable(Protocol):
    """What the repository needs: satisfied by a Connection, a pool's connection, or a Pool."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]: ...

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def copy_records_to_table(
        self, table_name: str, *, records: Iterable[Sequence[object]], columns: Sequence[str]
    ) -> str: ...


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a plain lowercase identifier, else raise ValueError."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}: must match {_SCHEMA_RE.pattern}")
    return schema


def quote_ident(name: str) -> str:
    """Double-quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def dsn_with_database(dsn: str, database: str) -> str:
    """The same connection URI pointed at another database (query parameters such as host kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> PgPool:
    """Open a pool whose connections resolve unqualified names in ``schema`` first."""
    validate_schema(schema)
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        reset=_keep_session,
        server_settings={
            "search_path": f"{quote_ident(schema)},public",
            "application_name": APPLICATION_NAME,
        },
    )


async def _keep_session(_conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """A released connection needs no reset beyond asyncpg's rollback (see the invariants)."""


@asynccontextmanager
async def transaction(pool: PgPool) -> AsyncIterator[PgPoolConnection]:
    """Acquire a connection and run the block in one transaction (rolled back on error)."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn
