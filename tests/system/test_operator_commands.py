"""Operator commands: the real executable against a real database, plus the pool-level API."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast
from uuid import UUID

import orjson
import pytest
from redis.asyncio import Redis

from cluster.keys import notifications_key
from operations.accounts import OperatorError, account_details, add_account, remove_account
from providers.models import (
    CalendarInfo,
    Event,
    EventStatus,
    EventTiming,
    SetAside,
    SyncPage,
)
from sandbox.embedded import Services
from store.accounts import create_account, find_account, get_account, set_status
from store.calendars import reconcile_calendars
from store.channels import ChannelRow, hash_token, save_channel
from store.credentials import load_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool, transaction
from store.events import apply_sync_page
from store.set_aside import set_items_aside
from supervisor.operator_commands import accounts_table
from tests.system.test_cli import EXE, cli_env

TOKEN = "1//0gSecretRefreshToken-abcdef123456"
KEY = generate_key()
KEYRING = Keyring("k1", {"k1": KEY})
KEY_ENV = {
    "IW_ENCRYPTION_KEYS": orjson.dumps({"k1": base64.urlsafe_b64encode(KEY).decode()}).decode(),
    "IW_ENCRYPTION_KEY_ID": "k1",
}
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


async def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(None if stdin is None else stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def env(database_url: str, services: Services) -> dict[str, str]:
    return cli_env(database_url, services.redis_url, IW_SHARD_COUNT="16", **KEY_ENV)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    return path


async def add(env: dict[str, str], email: str, token_file: Path, provider: str = "google") -> UUID:
    code, out, err = await cli(
        env,
        "accounts",
        "add",
        "--provider",
        provider,
        "--email",
        email,
        "--refresh-token-file",
        str(token_file),
    )
    assert code == 0, err
    assert TOKEN not in out + err
    return UUID(out.strip())


def event(event_id: str, calendar_id: str, *, all_day: bool = False) -> Event:
    if all_day:
        timing = EventTiming(all_day=True, start_date=date(2026, 3, 5), end_date=date(2026, 3, 6))
    else:
        timing = EventTiming(all_day=False, start_at=T0, end_at=T0 + timedelta(hours=1))
    return Event(
        id=event_id,
        calendar_id=calendar_id,
        status=EventStatus.CONFIRMED,
        timing=timing,
        title=f"title {event_id}",
        etag=f"e-{event_id}",
    )


async def seed_sync_state(pool: PgPool, account_id: UUID, channel_id: str = "chan-1") -> None:
    """Calendars "a" (two events, synced) and "b" (one event), their changes, a push channel."""
    async with transaction(pool) as conn:
        await reconcile_calendars(
            conn,
            account_id,
            [CalendarInfo("a", "Work", primary=True), CalendarInfo("b", "Home", primary=False)],
        )
        await apply_sync_page(
            conn,
            account_id,
            "a",
            SyncPage((event("e2", "a", all_day=True), event("e1", "a")), (), delta_token="d-1"),
        )
        await apply_sync_page(
            conn, account_id, "b", SyncPage((event("e3", "b"),), (), next_cursor="c-1")
        )
    await save_channel(
        pool,
        ChannelRow(
            provider="google",
            id=channel_id,
            account_id=account_id,
            calendar_id="a",
            shard=0,
            token_hash=hash_token("channel-secret"),
            expires_at=T0,
        ),
    )


async def counts(pool: PgPool, account_id: UUID) -> dict[str, int]:
    tables = ("accounts", "credentials", "calendars", "events", "push_channels", "changes")
    result = {}
    for table in tables:
        column = "id" if table == "accounts" else "account_id"
        result[table] = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1", account_id
        )
    return result


async def test_add_from_file_and_stdin_stores_encrypted_credentials_idempotently(
    pool: PgPool, env: dict[str, str], token_file: Path
) -> None:
    first = await add(env, "ann@example.com", token_file)
    again = await add(env, "ann@example.com", token_file)
    assert again == first
    code, out, err = await cli(
        env,
        "accounts",
        "add",
        "--provider",
        "microsoft",
        "--email",
        "bob@example.com",
        "--refresh-token-file",
        "-",
        stdin=f"{TOKEN}-ms\n",
    )
    assert code == 0, err
    assert TOKEN not in out + err
    second = UUID(out.strip())
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 2

    account = await get_account(pool, first)
    assert account is not None and account.status == "active" and 0 <= account.shard < 16
    creds = await load_credentials(pool, KEYRING, first)
    assert creds is not None and creds.refresh_token == TOKEN
    ms = await load_credentials(pool, KEYRING, second)
    assert ms is not None and ms.refresh_token == f"{TOKEN}-ms"
    stored = await pool.fetchval(
        "SELECT refresh_token FROM credentials WHERE account_id = $1", first
    )
    assert TOKEN.encode() not in bytes(stored)
    assert await find_account(pool, "microsoft", "bob@example.com") is not None

    code, out, err = await cli(env, "accounts", "show", str(first))
    assert code == 0, err
    assert TOKEN not in out + err and "key_id: k1" in out
    code, out, err = await cli(env, "accounts", "show", str(first), "--json")
    assert code == 0, err
    assert TOKEN not in out + err


async def test_add_refuses_missing_key_empty_token_and_unreadable_file(
    database_url: str, services: Services, env: dict[str, str], tmp_path: Path
) -> None:
    no_keys = cli_env(database_url, services.redis_url)
    base = ("accounts", "add", "--provider", "google", "--email", "x@example.com")
    code, out, err = await cli(no_keys, *base, "--refresh-token-file", "-", stdin=TOKEN)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        "invalid configuration: IW_ENCRYPTION_KEYS: no encryption key configured"
    ]
    code, out, err = await cli(env, *base, "--refresh-token-file", "-", stdin="  \n")
    assert (code, out, err.strip()) == (1, "", "no refresh token in stdin")
    missing = tmp_path / "nope"
    code, out, err = await cli(env, *base, "--refresh-token-file", str(missing))
    assert (code, out) == (1, "")
    assert (
        err.strip() == f"cannot read refresh token file {str(missing)!r}: No such file or directory"
    )


async def test_new_credentials_reactivate_a_needs_reauth_account(
    pool: PgPool, env: dict[str, str], token_file: Path
) -> None:
    account_id = await add(env, "ann@example.com", token_file)
    await set_status(pool, account_id, "needs_reauth", last_error="invalid_grant")
    await asyncio.to_thread(token_file.write_text, f"{TOKEN}-new")
    assert await add(env, "ann@example.com", token_file) == account_id
    account = await get_account(pool, account_id)
    assert account is not None and (account.status, account.last_error) == ("active", None)
    creds = await load_credentials(pool, KEYRING, account_id)
    assert creds is not None and creds.refresh_token == f"{TOKEN}-new"


async def test_list_filters_table_and_json(pool: PgPool, env: dict[str, str]) -> None:
    g = await create_account(pool, provider="google", external_user_id="g@x.io", shard_count=16)
    m = await create_account(pool, provider="microsoft", external_user_id="m@x.io", shard_count=16)
    await set_status(pool, m.id, "quarantined", last_error="boom\n" + "x" * 200)

    code, out, err = await cli(env, "accounts", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "EMAIL", "SHARD", "STATUS", "LAST", "ERROR"]
    assert len(lines) == 3 and str(g.id) in lines[1] and str(m.id) in lines[2]
    assert "boom xxx" in lines[2] and lines[2].endswith("...") and "x" * 100 not in lines[2]

    code, out, err = await cli(env, "accounts", "list", "--status", "quarantined", "--json")
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["provider"], r["email"], r["status"]) for r in rows] == [
        (str(m.id), "microsoft", "m@x.io", "quarantined")
    ]
    assert rows[0]["last_error"] == "boom\n" + "x" * 200 and rows[0]["shard"] == m.shard

    code, out, err = await cli(env, "accounts", "list", "--provider", "google", "--json")
    assert code == 0, err
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == [str(g.id)]
    code, out, err = await cli(
        env, "accounts", "list", "--provider", "google", "--status", "disabled"
    )
    assert code == 0 and out.splitlines() == [accounts_table([])]


async def test_show_gives_metadata_calendars_and_channels_never_secrets(
    pool: PgPool, env: dict[str, str], token_file: Path
) -> None:
    account_id = await add(env, "ann@example.com", token_file)
    await seed_sync_state(pool, account_id)
    code, out, err = await cli(env, "accounts", "show", str(account_id), "--json")
    assert code == 0, err
    details = orjson.loads(out)
    assert details == await account_details(pool, account_id)
    assert details["email"] == "ann@example.com" and details["status"] == "active"
    assert details["credentials"]["key_id"] == "k1"
    assert details["credentials"]["has_access_token"] is False
    assert details["events"] == 3
    cals = {c["id"]: c for c in details["calendars"]}
    assert (cals["a"]["has_delta_token"], cals["a"]["events"], cals["a"]["primary"]) == (
        True,
        2,
        True,
    )
    assert cals["a"]["last_synced_at"] is not None
    assert (cals["b"]["has_delta_token"], cals["b"]["mid_round"], cals["b"]["events"]) == (
        False,
        True,
        1,
    )
    assert details["push_channels"] == [
        {
            "provider": "google",
            "id": "chan-1",
            "calendar_id": "a",
            "expires_at": "2026-03-02T09:30:00Z",
        }
    ]
    assert (
        '"d-1"' not in out and '"c-1"' not in out and hash_token("channel-secret").hex() not in out
    )

    code, out, err = await cli(env, "accounts", "show", str(account_id))
    assert code == 0, err
    assert "events: 3" in out and "google:chan-1" in out and TOKEN not in out


async def test_items_set_aside_are_shown_and_retried_by_a_full_round(
    pool: PgPool, env: dict[str, str], token_file: Path, services: Services
) -> None:
    account_id = await add(env, "ann@example.com", token_file)
    await seed_sync_state(pool, account_id)
    item = SetAside("evt-9", "event.start is not a JSON object", {"id": "evt-9", "start": "?"})
    async with transaction(pool) as conn:
        await set_items_aside(conn, account_id, "a", [item])
    code, out, err = await cli(env, "accounts", "show", str(account_id))
    assert code == 0, err
    assert "a:evt-9  event.start is not a JSON object attempts=1" in out
    assert "set_aside=1" in out
    code, out, err = await cli(env, "accounts", "retry-set-aside", str(account_id))
    assert (code, out.splitlines()) == (0, ["a"]), err
    account = await get_account(pool, account_id)
    assert account is not None
    redis = Redis.from_url(services.redis_url)
    try:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await redis.xrange(notifications_key(account.shard)),
        )
    finally:
        await redis.aclose()
    mine = [f for _, f in entries if f[b"account_id"] == str(account_id).encode()]
    assert [(f[b"calendar_id"], f[b"kind"]) for f in mine] == [(b"a", b"resync")]


async def test_calendars_are_listed_and_deselected(
    pool: PgPool, env: dict[str, str], token_file: Path
) -> None:
    account_id = await add(env, "cal@example.com", token_file)
    await seed_sync_state(pool, account_id)
    code, out, err = await cli(env, "accounts", "calendars", str(account_id), "--json")
    assert code == 0, err
    rows = {r["id"]: r for r in map(orjson.loads, out.splitlines())}
    assert rows["a"]["selected"] and rows["a"]["choice"] is None
    code, out, err = await cli(env, "accounts", "calendars", str(account_id), "--deselect", "a")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["ID", "NAME", "SELECTED", "CHOICE", "ROLE", "WATCHABLE"]
    line = next(line for line in out.splitlines() if line.startswith("a "))
    assert line.split()[2:4] == ["no", "no"]
    code, _, err = await cli(env, "accounts", "calendars", str(account_id), "--select", "zz")
    assert code == 1 and "no calendar 'zz'" in err


async def test_disable_and_remove_purge_everything(
    pool: PgPool, env: dict[str, str], token_file: Path
) -> None:
    account_id = await add(env, "ann@example.com", token_file)
    other = await add(env, "bob@example.com", token_file)
    await seed_sync_state(pool, account_id)
    await seed_sync_state(pool, other, channel_id="chan-2")

    code, out, err = await cli(env, "accounts", "disable", str(account_id))
    assert (code, out.strip()) == (0, str(account_id)), err
    account = await get_account(pool, account_id)
    assert account is not None and account.status == "disabled"

    before = await counts(pool, account_id)
    assert before == {
        "accounts": 1,
        "credentials": 1,
        "calendars": 2,
        "events": 3,
        "push_channels": 1,
        "changes": 3,
    }
    code, out, err = await cli(env, "accounts", "remove", str(account_id))
    assert (code, out) == (1, "")
    assert "run again with --yes" in err and len(err.strip().splitlines()) == 1
    assert await counts(pool, account_id) == before

    code, out, err = await cli(env, "accounts", "remove", str(account_id), "--yes")
    assert (code, out.strip()) == (0, str(account_id)), err
    assert set((await counts(pool, account_id)).values()) == {0}
    assert await counts(pool, other) == before  # the other account is untouched

    code, out, err = await cli(env, "accounts", "remove", str(account_id), "--yes")
    assert (code, out, err.strip()) == (1, "", f"no account '{account_id}'")


async def test_remove_api_refuses_without_confirmation(pool: PgPool) -> None:
    account = await create_account(pool, provider="google", external_user_id="a", shard_count=4)
    with pytest.raises(OperatorError, match="--yes"):
        await remove_account(pool, account.id, confirmed=False)
    assert await get_account(pool, account.id) is not None
    with pytest.raises(OperatorError, match="no account"):
        await remove_account(pool, uuid.uuid4(), confirmed=True)


async def test_add_api_keeps_the_shard_and_reactivates(pool: PgPool) -> None:
    account = await add_account(
        pool, KEYRING, provider="google", email="z@x.io", refresh_token="t-1", shard_count=8
    )
    await set_status(pool, account.id, "disabled", last_error="disabled by operator")
    again = await add_account(
        pool, KEYRING, provider="google", email="z@x.io", refresh_token="t-2", shard_count=8
    )
    assert (again.id, again.shard, again.status) == (account.id, account.shard, "active")


async def test_events_export_prints_json_lines(
    pool: PgPool, env: dict[str, str], token_file: Path
) -> None:
    account_id = await add(env, "ann@example.com", token_file)
    await seed_sync_state(pool, account_id)
    code, out, err = await cli(env, "events", "export", "--account", str(account_id))
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    common = {"provider": "google", "account": str(account_id), "status": "confirmed"}
    timed = {"start": "2026-03-02T09:30:00Z", "end": "2026-03-02T10:30:00Z", "all_day": False}
    assert rows == [
        {**common, "calendar_id": "a", "event_id": "e1", **timed, "summary": "title e1"},
        {
            **common,
            "calendar_id": "a",
            "event_id": "e2",
            "start": "2026-03-05",
            "end": "2026-03-06",
            "all_day": True,
            "summary": "title e2",
        },
        {**common, "calendar_id": "b", "event_id": "e3", **timed, "summary": "title e3"},
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("accounts", "show", "{id}"),
        ("accounts", "disable", "{id}"),
        ("accounts", "remove", "{id}", "--yes"),
        ("events", "export", "--account", "{id}"),
        ("accounts", "show", "not-a-uuid"),
    ],
)
async def test_unknown_account_exits_1_with_one_line(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    missing = str(uuid.uuid4())
    code, out, err = await cli(env, *(a.format(id=missing) for a in args))
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and err.startswith("no account ")
