"""Migrations: ordered, idempotent, serialized across concurrent runners, atomic per file."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from store.db import PgPool, create_pool, dsn_with_database, transaction
from store.migrate import ADVISORY_LOCK_NAMESPACE, discover, migrate
from tests.conftest import SCHEMA

ACCOUNTS_SQL = resources.files("store.migrations").joinpath("0001_accounts.sql").read_text()


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def tables_by_schema(dsn: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await conn.close()
    result: dict[str, set[str]] = {}
    for row in rows:
        result.setdefault(row["table_schema"], set()).add(row["table_name"])
    return result


async def recorded_versions(dsn: str, schema: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
    finally:
        await conn.close()
    return [r["version"] for r in rows]


def test_packaged_migrations_are_discovered_in_order() -> None:
    migrations = discover()
    assert [(m.version, m.name) for m in migrations][:1] == [(1, "accounts")]
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)


def test_discover_orders_by_number_and_ignores_other_files(tmp_path: Path) -> None:
    source = write_migrations(
        tmp_path / "m",
        {"0010_c.sql": "", "0002_b.sql": "", "0001_a.sql": "", "README.md": "", "1_x.sql": ""},
    )
    assert [(m.version, m.name) for m in discover(source)] == [(1, "a"), (2, "b"), (10, "c")]


def test_discover_rejects_duplicate_versions(tmp_path: Path) -> None:
    source = write_migrations(tmp_path / "m", {"0001_a.sql": "", "0001_b.sql": ""})
    with pytest.raises(ValueError, match="duplicate migration version 1"):
        discover(source)


async def test_migrate_creates_tables_in_the_schema_and_is_idempotent(
    empty_database_url: str,
) -> None:
    every = [m.version for m in discover()]
    assert await migrate(empty_database_url, SCHEMA) == every
    assert await migrate(empty_database_url, SCHEMA) == []
    tables = await tables_by_schema(empty_database_url)
    assert set(tables) == {SCHEMA}
    assert {"schema_migrations", "accounts", "credentials", "events", "changes"} <= tables[SCHEMA]
    assert await recorded_versions(empty_database_url, SCHEMA) == every


async def test_schemas_are_isolated(empty_database_url: str) -> None:
    every = [m.version for m in discover()]
    assert await migrate(empty_database_url, "tenant_a") == every
    assert await migrate(empty_database_url, "tenant_b") == every
    tables = await tables_by_schema(empty_database_url)
    assert set(tables) == {"tenant_a", "tenant_b"}
    assert tables["tenant_a"] == tables["tenant_b"]
    assert {"schema_migrations", "accounts", "credentials"} <= tables["tenant_a"]


async def test_concurrent_runs_apply_each_version_exactly_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    source = write_migrations(
        tmp_path / "m",
        {
            "0001_accounts.sql": ACCOUNTS_SQL,
            # The sleep keeps the first runner inside the lock while the others queue up.
            "0002_slow.sql": "SELECT pg_sleep(0.2); ALTER TABLE accounts ADD COLUMN note text;",
            "0003_index.sql": "CREATE INDEX accounts_note_idx ON accounts (note);",
        },
    )
    results = await asyncio.gather(
        *(migrate(empty_database_url, SCHEMA, source=source) for _ in range(5))
    )
    applied = sorted(v for result in results for v in result)
    assert applied == [1, 2, 3]
    assert sorted(results, key=len, reverse=True) == [[1, 2, 3], [], [], [], []]
    assert await recorded_versions(empty_database_url, SCHEMA) == [1, 2, 3]
    conn = await asyncpg.connect(empty_database_url)
    try:
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
            SCHEMA,
            "accounts_note_idx",
        )
    finally:
        await conn.close()
    assert index is not None


async def test_failing_migration_rolls_back_completely(
    empty_database_url: str, tmp_path: Path
) -> None:
    source = write_migrations(
        tmp_path / "m",
        {
            "0001_accounts.sql": ACCOUNTS_SQL,
            "0002_broken.sql": (
                "CREATE TABLE half_done (id int);"
                " ALTER TABLE accounts ADD COLUMN note text;"
                " INSERT INTO no_such_table VALUES (1);"
            ),
        },
    )
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(empty_database_url, SCHEMA, source=source)

    # 0001 committed on its own; nothing of 0002 is left and it is not recorded.
    assert await recorded_versions(empty_database_url, SCHEMA) == [1]
    tables = await tables_by_schema(empty_database_url)
    assert tables == {SCHEMA: {"schema_migrations", "accounts", "credentials"}}
    conn = await asyncpg.connect(empty_database_url)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'accounts'",
            SCHEMA,
        )
        # The advisory lock was released despite the failure: it can be taken without waiting.
        assert await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", ADVISORY_LOCK_NAMESPACE, SCHEMA
        )
    finally:
        await conn.close()
    assert "note" not in {c["column_name"] for c in columns}

    (source / "0002_broken.sql").write_text("ALTER TABLE accounts ADD COLUMN note text;")
    assert await migrate(empty_database_url, SCHEMA, source=source) == [2]


@pytest.mark.parametrize("schema", ["Upper", "1starts_with_digit", 'x"; DROP TABLE y; --', ""])
async def test_invalid_schema_names_are_rejected(schema: str) -> None:
    # Validation happens before any connection is attempted.
    dsn = "postgresql://nobody@/nowhere?host=/nonexistent"
    with pytest.raises(ValueError, match="invalid schema name"):
        await migrate(dsn, schema)
    with pytest.raises(ValueError, match="invalid schema name"):
        await create_pool(dsn, schema)


async def test_pool_resolves_names_in_the_schema(database_url: str) -> None:
    pool = await create_pool(database_url, SCHEMA, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT current_schema()") == SCHEMA
        assert await pool.fetchval("SHOW application_name") == "integration-worker"
        assert await pool.fetchval("SELECT count(*) FROM accounts") == 0
    finally:
        await pool.close()


async def test_transaction_helper_rolls_back_on_error(
    pool: PgPool,
) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(pool) as conn:
            await conn.execute(
                "INSERT INTO accounts (provider, external_user_id, shard) VALUES ('google', 'u', 0)"
            )
            raise RuntimeError("abort")
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0


def test_dsn_with_database_keeps_host_and_options() -> None:
    dsn = "postgresql://postgres@/postgres?host=/tmp/x%20y&sslmode=disable"
    assert dsn_with_database(dsn, "other") == (
        "postgresql://postgres@/other?host=/tmp/x%20y&sslmode=disable"
    )
