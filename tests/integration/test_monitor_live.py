"""The monitor's commands on a live replica, typed over telnet as an operator would: real
Postgres and Redis, the in-process Google emulator, the accounts runtime with its actors."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
import telnetlib3

from config.settings import load_settings
from providers.google.client import GoogleCalendarProvider
from providers.http import create_session
from sandbox.embedded import Services
from sandbox.emulators.google import GoogleEmulator
from store.accounts import create_account, get_account
from store.credentials import Credentials, load_credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.events import export_events
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.replica import Replica, open_replica
from supervisor.services import ServiceUrls
from tests.system.test_cli import free_port, monitor_command, read_prompt

CLIENT, SECRET = "iw-monitor-test", "monitor-secret"
ID = r"[0-9a-f-]{36}"


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 20
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Console:
    """One telnet session at the replica's monitor."""

    reader: telnetlib3.TelnetReaderUnicode
    writer: telnetlib3.TelnetWriterUnicode

    async def run(self, command: str) -> str:
        return await monitor_command(self.reader, self.writer, command)


@asynccontextmanager
async def console(port: int) -> AsyncIterator[Console]:
    reader, writer = await telnetlib3.open_connection(
        "127.0.0.1", port, cols=220, rows=60, connect_minwait=0.2
    )
    assert isinstance(reader, telnetlib3.TelnetReaderUnicode)
    assert isinstance(writer, telnetlib3.TelnetWriterUnicode)
    try:
        assert "Asyncio Monitor" in await read_prompt(reader, after_newline=False)
        yield Console(reader, writer)
    finally:
        writer.close()


def event(summary: str, days: int) -> dict[str, object]:
    start = datetime.now(UTC) + timedelta(days=days)
    end = start + timedelta(hours=1)
    return {
        "summary": summary,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": end.isoformat()},
    }


async def test_operator_inspects_syncs_restarts_quarantines_and_releases_actors(
    pool: PgPool, database_url: str, services: Services
) -> None:
    key = generate_key()
    keyring = Keyring("k", {"k": key})
    port = free_port()
    settings = load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        shard_count=4,
        lease_ttl_s=1.0,
        replica_id="replica-monitor",
        encryption_keys={"k": base64.urlsafe_b64encode(key).decode()},
        encryption_key_id="k",
        monitor_enabled=True,
        monitor_port=port,
        monitor_webui_port=free_port(),
        monitor_console_port=free_port(),
        shutdown_timeout_s=2.0,
        sync_poll_s=3600.0,  # only a notification or the operator makes an actor sync
    )
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
        ids: list[str] = []
        for email in ("ada@example.com", "bob@example.com"):
            user = emulator.control.add_user(email, CLIENT)
            emulator.control.create_event(email, event("kickoff", 2))
            account = await create_account(
                pool, provider="google", external_user_id=email, shard_count=4
            )
            await store_credentials(
                pool, keyring, account.id, Credentials(account.id, user["refresh_token"])
            )
            ids.append(str(account.id))
        ada, bob = ids
        await replica.redis.flushall()
        runtime = AccountsRuntime(replica, {"google": provider}, keyring, scan_every_s=0.1)
        task = asyncio.create_task(runtime.run(), name="accounts-runtime")
        try:
            await wait_for(lambda: synced(replica, ids), "both accounts' first sync")
            async with console(port) as monitor:
                await operate(
                    monitor,
                    replica=replica,
                    pool=pool,
                    keyring=keyring,
                    emulator=emulator,
                    ada=ada,
                    bob=bob,
                )
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def synced(replica: Replica, ids: list[str]) -> bool:
    cells = [replica.supervisor.get(i) for i in ids]
    return all(
        c is not None
        and c.info is not None
        and c.info.last_sync_at is not None
        and c.state.value == "idle"
        for c in cells
    )


async def operate(
    monitor: Console,
    *,
    replica: Replica,
    pool: PgPool,
    keyring: Keyring,
    emulator: GoogleEmulator,
    ada: str,
    bob: str,
) -> None:
    # The table: summary first, provider and last sync filled in, sorted and paged.
    table = await monitor.run("actors --sort id --reverse")
    assert "2 actors (" in table
    rows = re.findall(rf"^({ID})\s+account\s+\w+\s+.*?\s+google\s+(\d+s ago)\s", table, re.M)
    assert [r[0] for r in rows] == sorted([ada, bob], reverse=True)
    second = await monitor.run("actors --sort id --limit 1 --page 2")
    assert re.findall(rf"^({ID})\s", second, re.M) == [max(ada, bob)]
    assert "rows 2-2 of 2 (page 2 of 2;" in second

    # The detail: token expiry but no token, calendars with their delta token's age.
    detail = await monitor.run(f"actor {ada}")
    assert f"task:          actor[{ada}]" in detail and "provider:      google" in detail
    assert re.search(r"credentials:\s+key k; access token expires in \d+", detail)
    assert re.search(r"^  ada@example.com\s+.*\s+on\s+yes\s+\d+s ago$", detail, re.M)
    assert "channels (0):" in detail
    creds = await load_credentials(pool, keyring, UUID(ada))
    assert creds is not None and creds.access_token is not None
    assert creds.refresh_token not in detail and creds.access_token not in detail

    # Shards: this replica owns all four, each with its epoch and lease time left.
    shards = await monitor.run("shards")
    assert "replica replica-monitor: 4 of 4 shards owned" in shards
    assert len(re.findall(r"^\d\s+owned\s+\d+\s+\d+\.\ds\s+\d+\.\ds$", shards, re.M)) == 4

    # aiomonitor's own task list: the account id matches exactly one task, the actor's.
    tasks = await monitor.run(f"ps -f {ada}")
    assert "1 tasks running" in tasks and f"actor[{ada}]" in tasks

    # sync: a change made in Google arrives now, not at the next poll an hour away.
    emulator.control.create_event("ada@example.com", event("review", 3))
    assert f"sync of {ada} requested" in await monitor.run(f"sync {ada}")
    await wait_for(lambda: has_titles(pool, ada, ["kickoff", "review"]), "the requested sync")

    # restart: a new incarnation in a new cell, rebuilt from storage.
    before = replica.supervisor.get(ada)
    assert re.search(rf"restarted {ada}: (starting|idle|busy)", await monitor.run(f"restart {ada}"))
    assert replica.supervisor.get(ada) not in (None, before)
    refused = await monitor.run(f"release {ada}")
    assert re.search(rf"actor {ada} is \w+, not quarantined", refused)

    # quarantine: parked here and marked in Postgres, as an automatic quarantine does.
    assert f"quarantined {bob}" in await monitor.run(f"quarantine {bob}")
    account = await get_account(pool, UUID(bob))
    assert account is not None and account.status == "quarantined"
    assert account.last_error == "quarantined by operator"
    parked = await monitor.run("actors --state quarantined")
    assert re.findall(rf"^({ID})\s+account\s+quarantined\s", parked, re.M) == [bob]
    assert f"actor {bob} is quarantined" in await monitor.run(f"sync {bob}")
    assert f"use 'release {bob}'" in await monitor.run(f"restart {bob}")

    # release: active in Postgres again, and its actor runs and syncs.
    assert re.search(rf"released {bob}: \w+, account active", await monitor.run(f"release {bob}"))
    account = await get_account(pool, UUID(bob))
    assert account is not None and account.status == "active" and account.last_error is None
    await wait_for(lambda: synced(replica, [ada, bob]), "both actors running again")
    assert "no actor 'nobody'" in await monitor.run("actor nobody")


async def has_titles(pool: PgPool, account_id: str, titles: list[str]) -> bool:
    return sorted(e["title"] for e in await export_events(pool, UUID(account_id))) == titles
