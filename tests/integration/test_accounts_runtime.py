"""A replica's account side end to end: real Postgres and Redis, the in-process Google emulator,
the real client. An account added while running is picked up and synced; a notification appended
to its shard stream (as the gateway does) is routed, synced and acknowledged after the commit."""

from __future__ import annotations

import asyncio
import base64
import gc
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from cluster.keys import NOTIFICATIONS_GROUP, notifications_key
from config.settings import Settings, load_settings
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

CLIENT = "iw-runtime-test"
SECRET = "runtime-secret"


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 15
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def settings_for(database_url: str, redis_url: str, key: bytes) -> Settings:
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        shard_count=4,
        lease_ttl_s=1.0,
        monitor_enabled=False,
        replica_id="replica-test",
        encryption_keys={"k": base64.urlsafe_b64encode(key).decode()},
        encryption_key_id="k",
    )


async def test_accounts_are_picked_up_synced_and_notifications_acknowledged(
    pool: PgPool, database_url: str, services: Services
) -> None:
    key = generate_key()
    settings = settings_for(database_url, services.redis_url, key)
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
        runtime = AccountsRuntime(replica, {"google": provider}, keyring, scan_every_s=0.1)
        task = asyncio.create_task(runtime.run(), name="accounts-runtime")
        try:
            # An account connected while the replica runs.
            user = emulator.control.add_user("ada@example.com", CLIENT)
            start = datetime.now(UTC) + timedelta(days=2)
            emulator.control.create_event(
                "ada@example.com",
                {
                    "summary": "kickoff",
                    "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
                },
            )
            account = await create_account(
                pool, provider="google", external_user_id="ada@example.com", shard_count=4
            )
            await store_credentials(
                pool, keyring, account.id, Credentials(account.id, user["refresh_token"])
            )

            async def titles() -> list[str]:
                return sorted(e["title"] for e in await export_events(pool, account.id))

            async def synced() -> bool:
                return await titles() == ["kickoff"]

            await wait_for(synced, "the first sync of the new account")
            # The scan that started the actor moved the long-lived heap out of the collector.
            assert gc.get_freeze_count() > 0

            # A change in Google, announced through the account's shard stream.
            emulator.control.create_event(
                "ada@example.com",
                {
                    "summary": "review",
                    "start": {"dateTime": (start + timedelta(days=1)).isoformat()},
                    "end": {"dateTime": (start + timedelta(days=1, hours=1)).isoformat()},
                },
            )
            stream = notifications_key(account.shard)
            fields = {"provider": "google", "account_id": str(account.id)}
            fields |= {"calendar_id": "primary", "channel_id": "c", "kind": "changed"}
            fields |= {"message_number": "2", "received_at": datetime.now(UTC).isoformat()}
            await replica.redis.xadd(stream, fields)  # type: ignore[arg-type]

            async def acknowledged() -> bool:
                if await titles() != ["kickoff", "review"]:
                    return False
                summary = await replica.redis.xpending(stream, NOTIFICATIONS_GROUP)
                return int(summary["pending"]) == 0 and await replica.redis.xlen(stream) <= 1

            await wait_for(acknowledged, "the notification to be synced and acknowledged")
            assert runtime.inbox is not None and runtime.inbox.statistics.acknowledged == 1

            # Disabled, then removed, while running: its actor stops.
            await pool.execute("UPDATE accounts SET status = 'disabled' WHERE id = $1", account.id)

            async def stopped() -> bool:
                return replica.supervisor.get(str(account.id)) is None

            await wait_for(stopped, "the disabled account's actor to stop")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await provider.aclose()
