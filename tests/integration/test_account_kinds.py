"""Account kinds on real servers: ``migrate`` records the registry's kinds and their outbox
operations, the tables refuse an unknown kind (accounts, push channels, outbox rows), ``enqueue``
validates a payload against the schema the account's kind declares, and a kind registered
through the registry alone (a second Outlook configuration, polled) runs its actors in a
replica and syncs from the Microsoft emulator.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import BaseModel, ConfigDict, Field

from actors.account import AccountActor, account_spec
from config.settings import load_settings
from kinds import AccountKind, KindRegistry, OutboxOperation, default_registry
from kinds.calendar import MICROSOFT, microsoft_budget
from operations.outbox import OutboxRequestError, enqueue
from providers.capabilities import ChannelScope, Syncs
from providers.interface import CalendarProvider
from providers.microsoft import CAPABILITIES as GRAPH
from sandbox.embedded import Services
from sandbox.emulators.shared.world import open_emulated_providers
from store.accounts import create_account
from store.credentials import Credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.migrate import migrate
from store.outbox import get_item, get_payload
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.replica import open_replica
from supervisor.services import ServiceUrls

SCHEMA = "integration_worker"
CLIENT_ID = "iw-kinds-test"


class LedgerEntry(BaseModel):
    """A test kind's operation payload: a time entry to post to a ledger."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    workspace_id: str = Field(min_length=1)
    matter: str = Field(min_length=1)
    minutes: int = Field(ge=1, le=24 * 60)


def _never_built(*_args: object) -> CalendarProvider:
    raise AssertionError("the ledger kind is never configured here")


LEDGER = AccountKind(
    name="ledger",
    capabilities=replace(GRAPH, channel_scope=ChannelScope.NONE, syncs=Syncs.RECORDS),
    configured=lambda _settings: False,
    client=_never_built,
    spec=account_spec,
    budget=microsoft_budget,
    budget_group="ledger",
    operations=(OutboxOperation("POST_ENTRY", LedgerEntry, "post a time entry"),),
)

# The same Graph client, another configuration: polled (no push), no keep-alive.
OUTLOOK_TEAM = replace(
    MICROSOFT,
    name="outlook-team",
    capabilities=replace(GRAPH, channel_scope=ChannelScope.NONE, keepalive=False),
    budget_group="outlook-team",
    webhook_path=None,
)


def registry_with(*extra: AccountKind) -> KindRegistry:
    registry = default_registry()
    for kind in extra:
        registry.register(kind)
    return registry


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 20.0
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_the_registry_refuses_a_second_kind_of_one_name() -> None:
    registry = default_registry()
    assert registry.names() == ("google", "microsoft")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(MICROSOFT)
    with pytest.raises(ValueError, match="must be lowercase"):
        registry.register(replace(LEDGER, name="Ledger"))
    assert "ledger" not in default_registry()  # each registry is fresh


async def test_migrate_records_the_kinds_and_the_tables_refuse_unknown_ones(
    database_url: str, pool: PgPool
) -> None:
    registry = registry_with(LEDGER)
    await migrate(database_url, SCHEMA, kinds=registry.catalog())
    await migrate(database_url, SCHEMA, kinds=registry.catalog())  # idempotent
    kinds = [r["name"] for r in await pool.fetch("SELECT name FROM account_kinds ORDER BY 1")]
    assert kinds == ["google", "ledger", "microsoft"]
    operations = {
        (r["kind"], r["operation"])
        for r in await pool.fetch("SELECT kind, operation FROM outbox_operations")
    }
    assert ("ledger", "POST_ENTRY") in operations
    assert ("google", "UPSERT_EVENT") in operations and ("ledger", "UPSERT_EVENT") not in operations

    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(
            "INSERT INTO accounts (provider, external_user_id, shard) VALUES ('slack', 'x', 0)"
        )
    account = await create_account(pool, provider="ledger", external_user_id="x", shard_count=1)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(
            "INSERT INTO push_channels (provider, id, account_id, calendar_id, shard, token_hash)"
            " VALUES ('slack', 'c', $1, 'primary', 0, '\\x00')",
            account.id,
        )


async def test_outbox_rows_carry_their_accounts_kind_and_its_operations(pool: PgPool) -> None:
    account = await create_account(pool, provider="google", external_user_id="a", shard_count=1)
    insert = (
        "INSERT INTO outbox (account_id, operation, workspace_id, kind)"
        " VALUES ($1, $2, 'ws', $3) RETURNING kind"
    )
    # An application's INSERT need not name the kind: the account's is filled in.
    assert await pool.fetchval(insert, account.id, "REBUILD_ALL", None) == "google"
    with pytest.raises(asyncpg.CheckViolationError, match="not the kind of account"):
        await pool.fetchval(insert, account.id, "REBUILD_ALL", "microsoft")
    as_json = (
        "INSERT INTO outbox (account_id, operation, workspace_id, payload)"
        " VALUES ($1, $2, 'ws', '{\"x\": 1}')"
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(as_json, account.id, "POST_ENTRY")  # not a calendar operation
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(as_json, account.id, "UPSERT_EVENT")  # its payload is the columns


async def test_enqueue_validates_the_payload_against_the_kinds_schema(
    database_url: str, pool: PgPool
) -> None:
    registry = registry_with(LEDGER)
    await migrate(database_url, SCHEMA, kinds=registry.catalog())
    calendar = await create_account(pool, provider="google", external_user_id="c", shard_count=1)
    upsert = {
        "workspace_id": "ws",
        "source_type": "task",
        "source_id": "t-1",
        "event_type": "DEADLINE",
        "version": 3,
        "title": "Brief due",
        "start": "2026-12-08",
        "end": "2026-12-09",
    }
    item_id = await enqueue(pool, calendar.id, "UPSERT_EVENT", upsert, kinds=registry)
    item = await get_item(pool, item_id)
    assert item is not None and item.content is not None
    assert item.content.title == "Brief due" and item.content.timing.all_day
    assert item.version == 3 and item.calendar_id == "primary"

    with pytest.raises(OutboxRequestError, match="title") as missing:
        await enqueue(pool, calendar.id, "UPSERT_EVENT", upsert | {"title": ""}, kinds=registry)
    assert "Brief" not in str(missing.value)
    with pytest.raises(OutboxRequestError, match="colour"):
        await enqueue(pool, calendar.id, "UPSERT_EVENT", upsert | {"colour": "red"})
    with pytest.raises(OutboxRequestError, match="both be datetimes or both be dates"):
        timed_end = upsert | {"end": "2026-12-09T10:00:00+00:00"}
        await enqueue(pool, calendar.id, "UPSERT_EVENT", timed_end)
    with pytest.raises(OutboxRequestError, match=r"accepted: UPSERT_EVENT, CANCEL_EVENT"):
        await enqueue(pool, calendar.id, "POST_ENTRY", {}, kinds=registry)

    ledger = await create_account(pool, provider="ledger", external_user_id="l", shard_count=1)
    entry = {"workspace_id": "ws", "matter": "M-12", "minutes": 90}
    entry_id = await enqueue(pool, ledger.id, "POST_ENTRY", entry, kinds=registry)
    assert await get_payload(pool, entry_id) == ("ledger", "POST_ENTRY", entry)
    with pytest.raises(OutboxRequestError, match="minutes") as refused:
        await enqueue(pool, ledger.id, "POST_ENTRY", entry | {"minutes": 99_999}, kinds=registry)
    assert "99999" not in str(refused.value)  # the value is never echoed
    with pytest.raises(OutboxRequestError, match="not registered here"):
        await enqueue(pool, ledger.id, "POST_ENTRY", entry)  # the shipped registry lacks it
    with pytest.raises(OutboxRequestError, match="no account"):
        await enqueue(pool, uuid.uuid4(), "POST_ENTRY", entry)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 2  # nothing refused was stored


async def test_a_kind_added_through_the_registry_alone_runs_in_a_replica(
    database_url: str, services: Services, pool: PgPool
) -> None:
    registry = registry_with(OUTLOOK_TEAM)
    await migrate(database_url, SCHEMA, kinds=registry.catalog())
    key = generate_key()
    keyring = Keyring("k", {"k": key})
    settings = load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        shard_count=1,
        lease_ttl_s=5.0,
        monitor_enabled=False,
        replica_id=f"replica-kinds-{uuid.uuid4().hex[:6]}",
        encryption_keys={"k": base64.urlsafe_b64encode(key).decode()},
        encryption_key_id="k",
    )
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    async with (
        open_emulated_providers(CLIENT_ID, secrets.token_urlsafe(16)) as world,
        open_replica(settings, urls) as replica,
    ):
        refresh_token = f"1//kinds-{secrets.token_urlsafe(12)}"
        world.microsoft.control.add_user("team@example.com", CLIENT_ID, refresh_token=refresh_token)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        end = start + timedelta(minutes=30)
        world.microsoft.control.create_event(
            "team@example.com",
            {
                "subject": "Team sync",
                "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            },
        )
        account = await create_account(
            pool, provider="outlook-team", external_user_id="team@example.com", shard_count=1
        )
        await store_credentials(pool, keyring, account.id, Credentials(account.id, refresh_token))
        clients = {"outlook-team": world.clients["microsoft"]}
        runtime = AccountsRuntime(replica, clients, keyring, scan_every_s=0.1, kinds=registry)
        task = asyncio.create_task(runtime.run(), name="kinds.runtime")
        try:

            async def synced() -> bool:
                titles = await pool.fetch(
                    "SELECT title FROM events WHERE account_id = $1", account.id
                )
                return [r["title"] for r in titles] == ["Team sync"]

            await wait_for(synced, "the outlook-team account's event")
            cell = replica.supervisor.get(str(account.id))
            assert cell is not None and isinstance(cell.actor, AccountActor)
            state = cell.actor.core.state
            assert state.capabilities is OUTLOOK_TEAM.capabilities and not state.push_enabled
            assert await pool.fetchval("SELECT count(*) FROM push_channels") == 0
            assert "token-keepalive" not in (cell.deadlines or {})
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
