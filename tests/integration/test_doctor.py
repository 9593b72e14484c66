"""``integration-worker doctor``: the audit's table and JSON, its exit code, and ``--repair``;
the real executable against a real database and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import orjson
import pytest
from redis.asyncio import Redis

from cluster.keys import notifications_key
from sandbox.embedded import Services
from store.accounts import Account, create_account
from store.db import PgPool
from supervisor.doctor import DoctorReport, examine, findings_table, render
from supervisor.maintenance_audit import AuditPolicy, FindingKind
from tests.system.test_cli import cli_env, run_cli

SHARDS = 8
POLICY = AuditPolicy(
    stale_after=timedelta(minutes=30),
    push=True,
    renewal_margin=timedelta(hours=1),
    providers=frozenset({"google"}),
)


@pytest.fixture
def env(database_url: str, services: Services) -> dict[str, str]:
    return cli_env(
        database_url,
        services.redis_url,
        IW_SHARD_COUNT=str(SHARDS),
        IW_GOOGLE_CLIENT_ID="client",
        IW_GOOGLE_CLIENT_SECRET="client-secret-value",
        IW_PUBLIC_BASE_URL="https://iw.example.com",
        IW_SYNC_POLL_S="900",
    )


async def _stale_account(pool: PgPool) -> Account:
    """An active Google account whose primary calendar last synced two hours ago."""
    account = await create_account(
        pool, provider="google", external_user_id="stale@x", shard_count=SHARDS
    )
    await pool.execute(
        "UPDATE accounts SET created_at = now() - interval '10 days' WHERE id = $1", account.id
    )
    await pool.execute(
        "INSERT INTO calendars (account_id, id, last_synced_at)"
        " VALUES ($1, 'primary', now() - interval '2 hours')",
        account.id,
    )
    return account


async def test_examine_renders_findings_as_a_table_and_as_json(pool: PgPool, redis: Redis) -> None:
    healthy = await examine(pool, POLICY, datetime.now(UTC))
    assert healthy == DoctorReport([], None) and healthy.healthy
    assert render(healthy, as_json=False) == "healthy: no findings"
    account = await _stale_account(pool)
    report = await examine(pool, POLICY, datetime.now(UTC), repair_with=redis)
    assert [(f.account_id, f.kind) for f in report.findings] == [
        (account.id, FindingKind.STALE_SYNC),
        (account.id, FindingKind.NO_CHANNEL),
    ]
    assert report.repairs_requested == 1  # one entry covers the calendar's two findings
    assert await redis.xlen(notifications_key(account.shard)) == 1
    header, *rows = findings_table(report.findings).splitlines()
    assert header.split() == ["ACCOUNT", "PROVIDER", "SHARD", "CALENDAR", "FINDING", "DETAIL"]
    assert rows[0].split()[:5] == [
        str(account.id),
        "google",
        str(account.shard),
        "primary",
        "stale_sync",
    ]
    assert render(report, as_json=False).endswith("repairs requested: 1")
    decoded = orjson.loads(render(report, as_json=True))
    assert decoded["healthy"] is False and decoded["repairs_requested"] == 1
    assert decoded["by_kind"]["stale_sync"] == 1
    assert decoded["findings"][1] == {
        "account_id": str(account.id),
        "provider": "google",
        "shard": account.shard,
        "calendar_id": "primary",
        "kind": "no_channel",
        "detail": "push configured, no channel",
    }


async def test_doctor_exits_0_when_healthy_and_1_with_findings(
    env: dict[str, str], pool: PgPool, redis: Redis
) -> None:
    code, out, err = await run_cli(env, "doctor")
    assert (code, out.strip(), err) == (0, "healthy: no findings", "")
    account = await _stale_account(pool)
    code, out, err = await run_cli(env, "doctor")
    assert code == 1
    assert "stale_sync" in out and "no_channel" in out and str(account.id) in out
    assert err.strip() == "2 finding(s) in 1 account(s)"
    assert "client-secret-value" not in out + err
    assert await redis.exists(notifications_key(account.shard)) == 0  # no --repair: no entry
    code, out, _ = await run_cli(env, "doctor", "--json", "--repair")
    assert code == 1
    decoded = orjson.loads(out)
    assert decoded["repairs_requested"] == 1
    assert [f["kind"] for f in decoded["findings"]] == ["stale_sync", "no_channel"]
    [(_, fields)] = cast(
        list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(notifications_key(account.shard))
    )
    assert fields[b"kind"] == b"changed" and fields[b"account_id"] == str(account.id).encode()
