"""PostgreSQL stops under a running replica (its own embedded server, stopped for real) while
notifications flow, and starts again.

Proven: the gateway and the admin API answer 503 while Postgres is away (the provider retries;
an operator retries) and recover with it, the replica
process stays up (its loops and its actors ride the outage out; no account is quarantined), and
once Postgres is back the next notification of each account brings Postgres level with the
provider again, the changes made during the outage included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

from actors.cell import ActorState
from kinds import default_registry
from sandbox.embedded import EmbeddedPostgres, Services
from sandbox.harness.pipeline import open_pipeline, wait_until
from store.db import create_pool, dsn_with_database
from store.migrate import migrate
from tests.support.admin_server import TOKEN, running_admin

SCHEMA = "integration_worker"
ACCOUNTS = 6
# Long enough for every actor to fail, back off and fail again (several restart rounds, the
# restart circuit opening); the outage is the injected failure, not a wait for something.
OUTAGE_S = 8.0


def _event(title: str) -> dict[str, object]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    return {
        "summary": title,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
    }


async def test_a_postgres_outage_is_ridden_out_and_the_accounts_converge(
    services: Services, tmp_path: Path
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg").start()
    try:
        admin = await asyncpg.connect(postgres.dsn)
        try:
            await admin.execute("CREATE DATABASE outage")
        finally:
            await admin.close()
        dsn = dsn_with_database(postgres.dsn, "outage")
        await migrate(dsn, SCHEMA, kinds=default_registry().catalog())
        pool = await create_pool(dsn, SCHEMA)
        try:
            async with (
                open_pipeline(dsn, services.redis_url, pool, shards=2) as pipeline,
                running_admin(pool, pipeline.redis, pipeline.keyring) as admin_url,
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            ):

                async def api_status() -> int:
                    async with http.get(f"{admin_url}/api/v1/accounts") as response:
                        return response.status

                people = [
                    await pipeline.add_person("google", f"user{i}@example.com")
                    for i in range(ACCOUNTS)
                ]
                await wait_until(pipeline.watching, "every account synced and watched", 90.0)
                google = pipeline.control("google")

                postgres.stop()
                stopped_at = time.monotonic()
                for person in people:  # pushed to a gateway that cannot verify them
                    google.create_event(person.email, _event("made during the outage"))
                await wait_until(
                    _async(lambda: pipeline.gateway.unavailable >= 1),
                    "the gateway to answer 503",
                )
                pipeline.sync_everyone()  # the actors try, and fail, to reach Postgres
                await wait_until(
                    _async(lambda: any(pipeline.restarts(p)[0] > 0 for p in people)),
                    "an actor to fail on the outage",
                )
                assert await api_status() == 503  # the admin API: retry later, not an error
                await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
                pipeline.check_runtime()  # the replica process is still up
                postgres.start()

                for person in people:  # the next change of each account is delivered
                    google.create_event(person.email, _event("made after the outage"))
                await pipeline.settle(timeout_s=90.0)
                pipeline.check_runtime()
                assert await api_status() == 200  # recovered with Postgres
                assert await pipeline.differences() == []
                for person in people:
                    cell = pipeline.replica.supervisor.get(str(person.account_id))
                    assert cell is not None and cell.state is not ActorState.QUARANTINED
                    titles = {
                        r["title"]
                        for r in await pool.fetch(
                            "SELECT title FROM events WHERE account_id = $1", person.account_id
                        )
                    }
                    assert {"made during the outage", "made after the outage"} <= titles
        finally:
            await pool.close()
    finally:
        postgres.stop()


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check
