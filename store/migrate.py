"""Forward-only schema migrations from numbered SQL files (``NNNN_name.sql``).

Invariants:
- Runs are serialized per schema by a session advisory lock, so replicas may start together.
- Each migration runs in its own transaction together with its ``schema_migrations`` row:
  it is either fully applied and recorded, or neither.
- Files are schema-agnostic: they run with ``search_path`` set to the target schema, and must
  not contain transaction control statements.
- After the files, the account kinds passed in (the registry's, ``kinds``) and their outbox
  operations are written to ``account_kinds`` / ``outbox_operations`` (added, never removed), in
  one transaction under the same lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from store.db import APPLICATION_NAME, quote_ident, validate_schema

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# First half of the two-key advisory lock; the second is hashtext(schema).
ADVISORY_LOCK_NAMESPACE = 0x1A7E_0001


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its version number, name and text."""

    version: int
    name: str
    sql: str


def discover(source: Path | None = None) -> list[Migration]:
    """Migrations in ``source`` (default: the packaged ``store.migrations``), by version."""
    root: Traversable = resources.files("store.migrations") if source is None else source
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        match = _FILE_RE.fullmatch(entry.name)
        if match is None or not entry.is_file():
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"duplicate migration version {version}: {entry.name}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(
    dsn: str,
    schema: str,
    *,
    source: Path | None = None,
    kinds: Mapping[str, Iterable[tuple[str, bool]]] | None = None,
) -> list[int]:
    """Apply pending migrations to ``schema`` and record ``kinds`` (kind -> its outbox
    operations, each with whether its payload is JSON); return the versions applied by this
    call."""
    schema_sql = quote_ident(validate_schema(schema))
    migrations = discover(source)
    conn = await asyncpg.connect(dsn, server_settings={"application_name": APPLICATION_NAME})
    try:
        # Session-level lock: held across the per-migration transactions, released in finally.
        await conn.execute(
            "SELECT pg_advisory_lock($1, hashtext($2))", ADVISORY_LOCK_NAMESPACE, schema
        )
        try:
            applied = await _apply_pending(conn, schema_sql, migrations)
            if kinds:
                await _record_kinds(conn, schema_sql, kinds)
            return applied
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock($1, hashtext($2))", ADVISORY_LOCK_NAMESPACE, schema
            )
    finally:
        await conn.close()


async def _apply_pending(
    conn: asyncpg.Connection[asyncpg.Record], schema_sql: str, migrations: list[Migration]
) -> list[int]:
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_sql}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {schema_sql}.schema_migrations ("
        " version int PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {
        r["version"]
        for r in await conn.fetch(f"SELECT version FROM {schema_sql}.schema_migrations")
    }
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        async with conn.transaction():
            await conn.execute(f"SET LOCAL search_path TO {schema_sql}, public")
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {schema_sql}.schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied.append(migration.version)
    return applied


async def _record_kinds(
    conn: asyncpg.Connection[asyncpg.Record],
    schema_sql: str,
    kinds: Mapping[str, Iterable[tuple[str, bool]]],
) -> None:
    rows = [(kind, op, json) for kind, operations in kinds.items() for op, json in operations]
    async with conn.transaction():
        await conn.execute(
            f"INSERT INTO {schema_sql}.account_kinds (name) SELECT unnest($1::text[])"
            " ON CONFLICT DO NOTHING",
            list(kinds),
        )
        # An operation whose payload moved between JSON and columns would strand its rows:
        # the conflict leaves the recorded form, and the outbox refuses rows of the new one.
        await conn.execute(
            f"INSERT INTO {schema_sql}.outbox_operations (kind, operation, json_payload)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[])"
            " ON CONFLICT DO NOTHING",
            [kind for kind, _, _ in rows],
            [op for _, op, _ in rows],
            [json for _, _, json in rows],
        )
