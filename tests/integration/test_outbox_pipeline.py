"""The outbox end to end in a running replica (``sandbox.harness.pipeline``): an application's
INSERT, in its own transaction, wakes the owning actor through LISTEN/NOTIFY (the fallback poll is
off), and the provider ends up with exactly the intended events on both emulators; inbound sync of
those writes reports nothing of origin provider, and the change feed names them ``outbox``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox.embedded import Services
from sandbox.harness.pipeline import Person, Pipeline, open_pipeline, wait_until
from store.db import PgPool

INSERT = (
    "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
    " event_type, calendar_id, version, title, all_day, start_at, end_at)"
    " VALUES ($1, $2, 'ws-1', 'task', $3, 'BLOCKER_DEADLINE', 'primary', $4, $5, false, $6, $7)"
)


async def enqueue(
    pool: PgPool,
    person: Person,
    operation: str,
    *,
    source: str,
    version: int,
    title: str | None,
    start: datetime,
) -> None:
    """What an application does: insert inside its own transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            INSERT,
            person.account_id,
            operation,
            source,
            version,
            title,
            start,
            start + timedelta(hours=1),
        )


async def done(pipeline: Pipeline) -> bool:
    pipeline.check_runtime()
    left = await pipeline.pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'pending'")
    return int(left) == 0


async def titles_at_provider(pipeline: Pipeline, person: Person) -> list[str]:
    windows = await pipeline.windows(person)
    exported = pipeline.exported(person, windows)
    return sorted(str(row["summary"]) for row in exported.values())


async def test_an_insert_wakes_the_actor_and_the_provider_matches(
    database_url: str, services: Services, pool: PgPool
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    async with open_pipeline(database_url, services.redis_url, pool) as pipeline:
        ada = await pipeline.add_person("google", "ada@example.com")
        bob = await pipeline.add_person("microsoft", "bob@example.com")
        await wait_until(pipeline.watching, "both accounts to sync and watch")
        for person in (ada, bob):
            await enqueue(
                pool,
                person,
                "UPSERT_EVENT",
                source="t-1",
                version=1,
                title="Deadline v1",
                start=start,
            )
            await enqueue(
                pool,
                person,
                "UPSERT_EVENT",
                source="t-2",
                version=1,
                title="Milestone",
                start=start,
            )
            await enqueue(
                pool,
                person,
                "UPSERT_EVENT",
                source="t-1",
                version=2,
                title="Deadline v2",
                start=start,
            )
        await wait_until(lambda: done(pipeline), "the outbox to drain (woken by NOTIFY)")
        for person in (ada, bob):
            await enqueue(
                pool, person, "CANCEL_EVENT", source="t-2", version=2, title=None, start=start
            )
        await wait_until(lambda: done(pipeline), "the cancels to drain")

        for person in (ada, bob):
            assert await titles_at_provider(pipeline, person) == ["Deadline v2"]
        await pipeline.settle()
        assert await pipeline.differences() == []  # Postgres mirrors the provider
        origins = await pool.fetch(
            "SELECT origin, kind, count(*) AS n FROM changes GROUP BY origin, kind"
            " ORDER BY origin, kind"
        )
        # Our own writes and their echoes: only origin outbox, nothing from the provider.
        assert {r["origin"] for r in origins} == {"outbox"}
        states = await pool.fetch("SELECT state, count(*) AS n FROM outbox GROUP BY state")
        assert {r["state"] for r in states} <= {"done", "skipped"}
