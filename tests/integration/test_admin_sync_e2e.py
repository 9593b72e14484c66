"""``POST /accounts/{id}/sync`` end to end: a replica running the account (in-process Google
emulator, real client, real Postgres and Redis) syncs a change it was not told about, and
acknowledges the API's stream entry after the commit."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from admin.auth import hash_token
from cluster.keys import NOTIFICATIONS_GROUP, notifications_key
from config.settings import load_settings
from providers.google.client import GoogleCalendarProvider
from providers.http import create_session
from sandbox.embedded import Services
from sandbox.emulators.google import GoogleEmulator
from store.accounts import create_account
from store.credentials import Credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.events import export_events
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.replica import open_replica
from supervisor.services import ServiceUrls
from tests.support.admin_server import TOKEN, running_admin

CLIENT = "iw-admin-test"
SECRET = "admin-secret"


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 15
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _event(summary: str, start: datetime) -> dict[str, object]:
    return {
        "summary": summary,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
    }


async def test_sync_now_reaches_the_actor_which_syncs_and_acknowledges(
    pool: PgPool, database_url: str, services: Services
) -> None:
    key = generate_key()
    settings = load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        shard_count=4,
        lease_ttl_s=1.0,
        monitor_enabled=False,
        sync_poll_s=86_400.0,  # no safety-net poll finds the change in this test's time
        replica_id="replica-admin",
        encryption_keys={"k": base64.urlsafe_b64encode(key).decode()},
        encryption_key_id="k",
        api_token_hashes=[hash_token(TOKEN)],
    )
    keyring = Keyring("k", {"k": key})
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    async with (
        GoogleEmulator("127.0.0.1", 0) as emulator,
        create_session() as http,
        open_replica(settings, urls) as replica,
    ):
        emulator.control.add_client(CLIENT, SECRET)
        provider = GoogleCalendarProvider(
            http,
            api_base_url=emulator.api_base_url,
            token_uri=emulator.token_uri,
            client_id=CLIENT,
            client_secret=SECRET,
        )
        await replica.redis.flushall()
        user = emulator.control.add_user("ada@example.com", CLIENT)
        start = datetime.now(UTC) + timedelta(days=2)
        emulator.control.create_event("ada@example.com", _event("kickoff", start))
        account = await create_account(
            pool, provider="google", external_user_id="ada@example.com", shard_count=4
        )
        await store_credentials(
            pool, keyring, account.id, Credentials(account.id, user["refresh_token"])
        )

        async def titles() -> list[str]:
            return sorted(e["title"] for e in await export_events(pool, account.id))

        runtime = AccountsRuntime(replica, {"google": provider}, keyring, scan_every_s=0.1)
        task = asyncio.create_task(runtime.run(), name="accounts-runtime")
        try:

            async def first_synced() -> bool:
                return await titles() == ["kickoff"]

            await wait_for(first_synced, "the first sync")
            # A change no notification announces (no push channel here): only a sync finds it.
            emulator.control.create_event("ada@example.com", _event("review", start))
            async with (
                running_admin(pool, replica.redis, keyring, settings) as base_url,
                aiohttp.ClientSession() as client,
                client.post(
                    f"{base_url}/api/v1/accounts/{account.id}/sync",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as response,
            ):
                assert response.status == 202
            stream = notifications_key(account.shard)

            async def synced_and_acknowledged() -> bool:
                if await titles() != ["kickoff", "review"]:
                    return False
                summary = await replica.redis.xpending(stream, NOTIFICATIONS_GROUP)
                inbox = runtime.inbox
                return (
                    inbox is not None
                    and inbox.statistics.acknowledged >= 1
                    and int(summary["pending"]) == 0
                )

            await wait_for(synced_and_acknowledged, "the requested sync and its acknowledgement")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await provider.aclose()
