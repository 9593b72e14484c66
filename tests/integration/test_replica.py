"""A replica's lifetime pieces against real Postgres and Redis: an actor that keeps crashing is
quarantined and its account marked in Postgres with the last error."""

from __future__ import annotations

import asyncio
import time

from actors.actor import Actor
from actors.spec import ChildSpec
from config.settings import load_settings
from sandbox.embedded import Services
from store.accounts import create_account, get_account
from store.db import PgPool
from supervisor.replica import open_replica
from supervisor.services import ServiceUrls


class AlwaysFails(Actor[object]):
    """Crashes on every start after the first, as a poisoned account would."""

    __slots__ = ()
    starts = 0

    async def on_start(self) -> None:
        AlwaysFails.starts += 1
        if AlwaysFails.starts > 1:
            raise ValueError("provider returned a page this client cannot parse")
        self.set_timer("crash", 0)

    async def on_deadline(self, name: str) -> None:
        raise ValueError("provider returned a page this client cannot parse")


async def test_a_crash_looping_account_is_quarantined_in_postgres(
    pool: PgPool, database_url: str, services: Services
) -> None:
    settings = load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        monitor_enabled=False,
        restart_max=2,
        restart_backoff_initial_s=0.01,
        restart_backoff_max_s=0.02,
    )
    account = await create_account(pool, provider="google", external_user_id="p@x", shard_count=4)
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    async with open_replica(settings, urls) as replica:
        spec: ChildSpec[object] = ChildSpec(factory=lambda _id: AlwaysFails(), kind="account")
        await replica.supervisor.start_child(str(account.id), spec)
        deadline = time.monotonic() + 10
        while (stored := await get_account(pool, account.id)) is None or stored.status != (
            "quarantined"
        ):
            assert time.monotonic() < deadline, "the account was not quarantined"
            await asyncio.sleep(0.02)
    assert stored.last_error == "ValueError: provider returned a page this client cannot parse"
