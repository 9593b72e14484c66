"""The admin API's behaviour on a real loopback server, real Postgres and real Redis."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from actors.account.messages import Resync, SyncNow, message_of
from admin.accounts import PREFERENCES_KIND, SYNC_NOW_KIND
from admin.auth import hash_token
from cluster.inbox import Inbox, InboxEntry
from cluster.keys import lease_key, notifications_key
from cluster.leases import LeaseStore
from config.settings import ConfigError
from metrics import events as metrics
from outbox.model import ItemState
from providers.models import CalendarInfo, SetAside
from sandbox.embedded import Services
from store import outbox as store_outbox
from store.accounts import create_account, get_account
from store.calendars import reconcile_calendars
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.fencing import take_shard
from store.preferences import Preferences, load_preferences
from store.set_aside import set_items_aside
from tests.support.admin_server import SHARD_COUNT, TOKEN, admin_settings, running_admin

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REFRESH_TOKEN = "1//refresh-token-that-must-never-show"


class Api:
    """A client of the running API, with the token."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url + "/api/v1"

    async def call(
        self, method: str, path: str, *, json: Any = None, data: bytes | io.BytesIO | None = None
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base_url + path, json=json, data=data, headers=AUTH
        ) as response:
            body = None if response.status == 204 else await response.json()
            return response.status, body


@pytest.fixture
async def api(pool: PgPool, redis: Redis, keyring: Keyring) -> AsyncIterator[Api]:
    async with running_admin(pool, redis, keyring) as base_url, aiohttp.ClientSession() as http:
        yield Api(http, base_url)


async def _connect(api: Api, email: str, provider: str = "google") -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        "/accounts",
        json={"provider": provider, "email": email, "refresh_token": REFRESH_TOKEN},
    )
    assert status == 201, body
    assert isinstance(body, dict)
    return body


# --- accounts -----------------------------------------------------------------------------


async def test_account_lifecycle_connect_list_get_disable_enable_purge(
    api: Api, pool: PgPool, json_logs: io.StringIO
) -> None:
    account = await _connect(api, "ada@example.com")
    assert account["status"] == "active" and account["email"] == "ada@example.com"
    assert REFRESH_TOKEN not in str(account)
    stored = await pool.fetchval(
        "SELECT refresh_token FROM credentials WHERE account_id = $1::uuid", account["id"]
    )
    assert stored is not None and REFRESH_TOKEN.encode() not in bytes(stored)  # encrypted

    status, page = await api.call("GET", "/accounts")
    assert status == 200 and [a["id"] for a in page["items"]] == [account["id"]]
    status, same = await api.call("GET", f"/accounts/{account['id']}")
    assert status == 200 and same == account

    status, disabled = await api.call("POST", f"/accounts/{account['id']}/disable")
    assert status == 200 and disabled["status"] == "disabled"
    status, page = await api.call("GET", "/accounts?status=active")
    assert page["items"] == []
    status, enabled = await api.call("POST", f"/accounts/{account['id']}/enable")
    assert status == 200 and enabled["status"] == "active" and enabled["last_error"] is None

    status, refused = await api.call("DELETE", f"/accounts/{account['id']}")
    assert status == 409 and refused["error"]["code"] == "purge_required"
    assert await get_account(pool, account["id"]) is not None
    status, _ = await api.call("DELETE", f"/accounts/{account['id']}?purge=true")
    assert status == 204
    status, missing = await api.call("GET", f"/accounts/{account['id']}")
    assert status == 404 and missing["error"]["code"] == "not_found"
    assert REFRESH_TOKEN not in json_logs.getvalue()


async def test_connecting_again_reactivates_with_new_credentials(api: Api) -> None:
    first = await _connect(api, "bo@example.com", "microsoft")
    await api.call("POST", f"/accounts/{first['id']}/disable")
    again = await _connect(api, "bo@example.com", "microsoft")
    assert again["id"] == first["id"] and again["status"] == "active"


async def test_connecting_an_unregistered_kind_is_refused_clearly(api: Api, pool: PgPool) -> None:
    body = {"provider": "yahoo", "email": "x@example.com", "refresh_token": REFRESH_TOKEN}
    status, refused = await api.call("POST", "/accounts", json=body)
    assert status == 422 and refused["error"]["code"] == "invalid_request"
    assert "unknown account kind 'yahoo'" in refused["error"]["message"]
    assert "google, microsoft" in refused["error"]["message"]
    status, _ = await api.call("POST", "/accounts", json=body | {"provider": "Not A Kind"})
    assert status == 422
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0


async def test_enable_refuses_an_account_that_needs_new_credentials(api: Api, pool: PgPool) -> None:
    account = await _connect(api, "cy@example.com")
    await pool.execute(
        "UPDATE accounts SET status = 'needs_reauth' WHERE id = $1::uuid", account["id"]
    )
    status, body = await api.call("POST", f"/accounts/{account['id']}/enable")
    assert status == 409 and body["error"]["code"] == "not_disabled"


async def test_accounts_are_paged_by_cursor_and_filtered(api: Api) -> None:
    ids = [
        (await _connect(api, f"u{i}@example.com", ("google", "microsoft")[i % 2]))["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/accounts?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path)
        assert status == 200 and len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    status, google = await api.call("GET", "/accounts?provider=google")
    assert [a["id"] for a in google["items"]] == ids[0::2]
    status, body = await api.call("GET", "/accounts?cursor=bm90LWEtY3Vyc29y")
    assert status == 422 and body["error"]["code"] == "invalid_cursor"


# --- sync now -----------------------------------------------------------------------------


async def _read_inbox(redis: Redis, shard: int) -> list[InboxEntry]:
    """What a replica's inbox reads from ``shard``'s stream and routes to the actors."""
    routed: list[InboxEntry] = []

    def route(entry: InboxEntry) -> bool:
        routed.append(entry)
        return True

    inbox = Inbox(redis, "replica-a", route, on_lost=lambda _shard: None, block_ms=10)
    for _ in range(3):  # the first read sets the group up and re-reads its own (empty) backlog
        if await inbox.read_once([shard]):
            break
    return routed


async def test_sync_now_appends_an_entry_the_inbox_routes_as_a_full_sync(
    api: Api, redis: Redis
) -> None:
    account = await _connect(api, "sy@example.com")
    status, accepted = await api.call("POST", f"/accounts/{account['id']}/sync")
    assert status == 202 and accepted["account_id"] == account["id"]

    (entry,) = await _read_inbox(redis, account["shard"])
    assert entry.account_id == account["id"] and entry.kind == SYNC_NOW_KIND
    assert entry.calendar_id == "" and entry.entry_id == accepted["entry_id"]
    raw = await redis.xrange(notifications_key(account["shard"]))
    ((_, fields),) = cast(list[tuple[bytes, dict[bytes, bytes]]], raw)
    assert fields[b"provider"] == b"google"


async def test_sync_now_refuses_an_inactive_account(api: Api, redis: Redis) -> None:
    account = await _connect(api, "off@example.com")
    await api.call("POST", f"/accounts/{account['id']}/disable")
    status, body = await api.call("POST", f"/accounts/{account['id']}/sync")
    assert status == 409 and body["error"]["code"] == "not_active"
    assert await redis.exists(notifications_key(account["shard"])) == 0


async def test_calendars_are_listed_and_chosen(api: Api, redis: Redis, pool: PgPool) -> None:
    account = await _connect(api, "cals@example.com")
    account_id = UUID(account["id"])
    listed = [
        CalendarInfo("cal-me", "Me", primary=True, access_role="owner"),
        CalendarInfo("cal-hol", "Holidays", primary=False, access_role="reader"),
    ]
    await reconcile_calendars(pool, account_id, listed)
    status, body = await api.call("GET", f"/accounts/{account_id}/calendars")
    assert status == 200
    shown = {c["id"]: (c["selected"], c["choice"], c["default"]) for c in body["items"]}
    assert shown == {"cal-hol": (False, None, False), "cal-me": (True, None, True)}

    status, chosen = await api.call(
        "PUT", f"/accounts/{account_id}/calendars/cal-hol", json={"selected": True}
    )
    assert status == 200 and (chosen["selected"], chosen["choice"]) == (True, True)
    (entry,) = await _read_inbox(redis, account["shard"])
    assert message_of(entry) == SyncNow()  # the owning actor acts on it
    status, _ = await api.call(
        "PUT", f"/accounts/{account_id}/calendars/nope", json={"selected": True}
    )
    assert status == 404
    status, _ = await api.call("PUT", f"/accounts/{account_id}/calendars/cal-me", json={"x": 1})
    assert status == 422


async def test_items_set_aside_are_listed_and_retried_by_a_full_round(
    api: Api, redis: Redis, pool: PgPool
) -> None:
    account = await _connect(api, "aside@example.com")
    account_id = UUID(account["id"])
    await reconcile_calendars(pool, account_id, [CalendarInfo("cal-1", "Work", primary=True)])
    item = SetAside("evt-1", "event.start is not a JSON object", {"id": "evt-1", "start": "?"})
    async with pool.acquire() as conn, conn.transaction():
        await set_items_aside(conn, account_id, "cal-1", [item])
    status, listed = await api.call("GET", f"/accounts/{account_id}/set-aside")
    assert status == 200
    (shown,) = listed["items"]
    assert (shown["calendar_id"], shown["item_id"], shown["attempts"]) == ("cal-1", "evt-1", 1)
    assert shown["reason"] == item.reason and "raw" not in shown  # never the item itself

    status, accepted = await api.call("POST", f"/accounts/{account_id}/set-aside/retry")
    assert status == 202 and accepted["calendars"] == ["cal-1"]
    (entry,) = await _read_inbox(redis, account["shard"])
    assert message_of(entry) == Resync("cal-1")
    assert [entry.entry_id] == accepted["entry_ids"]

    await api.call("POST", f"/accounts/{account_id}/disable")
    status, body = await api.call("POST", f"/accounts/{account_id}/set-aside/retry")
    assert status == 409 and body["error"]["code"] == "not_active"
    status, _ = await api.call("GET", f"/accounts/{uuid.uuid4()}/set-aside")
    assert status == 404


# --- preferences --------------------------------------------------------------------------


async def test_preferences_round_trip_bump_updated_at_and_tell_the_actor(
    api: Api, pool: PgPool, redis: Redis
) -> None:
    account = await _connect(api, "pr@example.com")
    path = f"/accounts/{account['id']}/preferences"
    status, defaults = await api.call("GET", path)
    assert status == 200 and defaults["stored"] is False
    assert defaults["auto_sync"] is True and defaults["sync_frequency_minutes"] == 15
    assert defaults["sync_window_back_days"] is None

    wanted = {
        "auto_sync": False,
        "sync_frequency_minutes": 60,
        "sync_window_back_days": 7,
        "sync_window_ahead_days": None,
    }
    status, saved = await api.call("PUT", path, json=wanted)
    assert status == 200 and saved == {**wanted, "account_id": account["id"], "stored": True}
    status, read = await api.call("GET", path)
    assert read == saved
    (entry,) = await _read_inbox(redis, account["shard"])
    assert entry.account_id == account["id"] and entry.kind == PREFERENCES_KIND
    status, after = await api.call("GET", f"/accounts/{account['id']}")
    assert after["updated_at"] > account["updated_at"]
    loaded = await load_preferences(pool, [after["id"]])
    assert list(loaded.values()) == [Preferences(False, 60, 7, None)]


async def test_invalid_preferences_are_422_with_fields_and_no_echo(api: Api) -> None:
    account = await _connect(api, "bad@example.com")
    path = f"/accounts/{account['id']}/preferences"
    body = {"auto_sync": True, "sync_frequency_minutes": 1441, "colour": "zz-unique-input"}
    status, error = await api.call("PUT", path, json=body)
    assert status == 422 and error["error"]["code"] == "invalid_request"
    locations = {f["location"] for f in error["error"]["fields"]}
    assert locations == {"body.sync_frequency_minutes", "body.colour"}
    assert "zz-unique-input" not in str(error)
    status, _ = await api.call("PUT", path, json={**body, "sync_frequency_minutes": 0})
    assert status == 422
    unknown = "/accounts/00000000-0000-4000-8000-000000000000/preferences"
    status, _ = await api.call(
        "PUT", unknown, json={"auto_sync": True, "sync_frequency_minutes": 5}
    )
    assert status == 404


# --- outbox -------------------------------------------------------------------------------


async def test_outbox_enqueue_lands_rows_and_refuses_bad_requests(api: Api, pool: PgPool) -> None:
    account = await _connect(api, "ob@example.com")
    source = {
        "account_id": account["id"],
        "workspace_id": "w1",
        "source_type": "task",
        "source_id": "t1",
        "event_type": "DEADLINE",
        "version": 3,
    }
    timed = {
        **source,
        "operation": "UPSERT_EVENT",
        "title": "Deadline",
        "start": "2026-03-02T09:30:00+01:00",
        "end": "2026-03-02T10:00:00+01:00",
        "time_zone": "Europe/Paris",
    }
    status, queued = await api.call("POST", "/outbox", json=timed)
    assert status == 202
    item = await store_outbox.get_item(pool, queued["id"])
    assert item is not None and item.state is ItemState.PENDING and item.version == 3
    assert item.content is not None and item.content.title == "Deadline"
    all_day = {**source, "operation": "UPSERT_EVENT", "title": "Day"}
    all_day |= {"start_date": "2026-03-02", "end_date": "2026-03-03"}
    for request in (
        all_day,
        {**source, "operation": "CANCEL_EVENT"},
        {"operation": "REBUILD_ALL", "account_id": account["id"], "workspace_id": "w1"},
    ):
        status, _ = await api.call("POST", "/outbox", json=request)
        assert status == 202
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 4

    status, body = await api.call("POST", "/outbox", json={**timed, "start_date": "2026-03-02"})
    assert status == 422 and body["error"]["code"] == "invalid_request"
    status, body = await api.call("POST", "/outbox", json={**timed, "time_zone": "Mars/Base"})
    assert status == 422 and "time_zone" in body["error"]["message"]
    status, body = await api.call(
        "POST", "/outbox", json={**timed, "account_id": "00000000-0000-4000-8000-000000000000"}
    )
    assert status == 404
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 4
    status, report = await api.call("GET", "/outbox/status")
    assert status == 200 and report["counts"]["pending"] == 4


async def test_dead_letters_are_paged_and_replayed_once(api: Api, pool: PgPool) -> None:
    account = await _connect(api, "dl@example.com")
    ids = []
    for n in range(3):
        status, queued = await api.call(
            "POST",
            "/outbox",
            json={"operation": "REBUILD_ALL", "account_id": account["id"], "workspace_id": f"w{n}"},
        )
        ids.append(queued["id"])
        assert await store_outbox.dead_letter(pool, queued["id"], attempts=10, error="boom")
    status, first = await api.call("GET", "/outbox/dead-letters?limit=2")
    assert status == 200 and [i["id"] for i in first["items"]] == ids[:2]
    assert first["items"][0]["last_error"] == "boom"
    status, second = await api.call(
        "GET", f"/outbox/dead-letters?limit=2&cursor={first['next_cursor']}"
    )
    assert [i["id"] for i in second["items"]] == ids[2:] and second["next_cursor"] is None

    status, replayed = await api.call("POST", f"/outbox/dead-letters/{ids[0]}/replay")
    assert status == 200 and replayed == {"id": ids[0], "replayed": True}
    item = await store_outbox.get_item(pool, ids[0])
    assert item is not None and item.state is ItemState.PENDING and item.attempts == 0
    status, again = await api.call("POST", f"/outbox/dead-letters/{ids[0]}/replay")
    assert status == 409 and again["error"]["code"] == "not_dead_letter"
    status, _ = await api.call("POST", "/outbox/dead-letters/999999/replay")
    assert status == 404
    status, _ = await api.call("GET", "/accounts?cursor=" + first["next_cursor"])
    assert status == 422  # a dead-letters cursor is not an accounts cursor


# --- shards -------------------------------------------------------------------------------


async def test_shards_overview_reads_leases_epochs_members_and_counts(
    api: Api, pool: PgPool, redis: Redis
) -> None:
    account = await create_account(
        pool, provider="google", external_user_id="sh@example.com", shard_count=SHARD_COUNT
    )
    shard = account.shard
    leases = LeaseStore(redis, "replica-a", ttl_s=30)
    assert await leases.try_claim(shard)
    await leases.heartbeat()
    assert await take_shard(pool, shard, "replica-a") == 1

    status, overview = await api.call("GET", "/shards")
    assert status == 200 and overview["shard_count"] == SHARD_COUNT
    assert [m["replica_id"] for m in overview["members"]] == ["replica-a"]
    assert 0 < overview["members"][0]["lapses_in_ms"] <= 30_000
    row = overview["shards"][shard]
    assert row["holder"] == "replica-a" and 0 < row["lease_ms_left"] <= 30_000
    assert row["epoch"] == 1 and row["epoch_owner"] == "replica-a" and row["accounts"] == 1
    others = [s for s in overview["shards"] if s["shard"] != shard]
    assert all(s["holder"] is None and s["accounts"] == 0 for s in others)
    assert await redis.exists(lease_key(shard)) == 1  # read only


# --- errors -------------------------------------------------------------------------------


async def test_router_refusals_share_the_error_shape(api: Api) -> None:
    status, body = await api.call("GET", "/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"
    async with api.http.patch(api.base_url + "/accounts", headers=AUTH) as response:
        assert response.status == 405 and set(response.headers["Allow"].split(",")) == {
            "GET",
            "POST",
        }
        assert (await response.json())["error"]["code"] == "method_not_allowed"
    status, body = await api.call("POST", "/accounts", data=io.BytesIO(b"x" * (1 << 20) + b"xx"))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    status, body = await api.call("POST", "/accounts", data=b"{not json")
    assert status == 422 and body["error"]["fields"][0]["location"].startswith("body")
    status, body = await api.call("GET", "/accounts/not-a-uuid")
    assert status == 422 and body["error"]["fields"][0]["location"] == "path.account_id"
    status, body = await api.call("GET", "/shards?verbose=1")
    assert status == 422


async def test_nul_in_text_is_refused_without_echo(api: Api) -> None:
    body = {"provider": "google", "email": "zz-echo\x00@example.com", "refresh_token": "rt"}
    status, error = await api.call("POST", "/accounts", json=body)
    assert status == 422 and "zz-echo" not in str(error)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_is_a_503(pool: PgPool, keyring: Keyring) -> None:
    dead = Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    try:
        async with (
            running_admin(pool, dead, keyring) as base_url,
            aiohttp.ClientSession() as http,
            http.get(base_url + "/api/v1/shards", headers=AUTH) as response,
        ):
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "unavailable"
    finally:
        await dead.aclose()


async def test_the_api_refuses_to_start_without_token_hashes(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    with pytest.raises(ConfigError, match="IW_API_TOKEN_HASHES"):
        async with running_admin(pool, redis, keyring, admin_settings(api_token_hashes=[])):
            pass


async def test_a_second_configured_token_is_accepted(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    settings = admin_settings(api_token_hashes=[hash_token("other"), hash_token(TOKEN)])
    async with (
        running_admin(pool, redis, keyring, settings) as base_url,
        aiohttp.ClientSession() as http,
    ):
        for token, expected in (("other", 200), (TOKEN, 200), ("third", 401)):
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(base_url + "/api/v1/accounts", headers=headers) as response:
                assert response.status == expected


async def test_openapi_document_is_public(api: Api) -> None:
    async with api.http.get(api.base_url + "/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/accounts" in document["paths"]


async def test_preferences_load_only_stored_rows_and_go_with_the_account(
    api: Api, pool: PgPool
) -> None:
    first = await _connect(api, "p1@example.com")
    second = await _connect(api, "p2@example.com")
    body = {"auto_sync": True, "sync_frequency_minutes": 5, "sync_window_ahead_days": 30}
    await api.call("PUT", f"/accounts/{first['id']}/preferences", json=body)
    loaded = await load_preferences(pool, [UUID(first["id"]), UUID(second["id"])])
    assert loaded == {UUID(first["id"]): Preferences(True, 5, None, 30)}
    await api.call("DELETE", f"/accounts/{first['id']}?purge=true")
    assert await pool.fetchval("SELECT count(*) FROM account_preferences") == 0


async def test_api_command_serves_until_stopped(database_url: str, services: Services) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
    env |= {
        "IW_DATABASE_URL": database_url,
        "IW_REDIS_URL": services.redis_url,
        "IW_LOG_LEVEL": "WARNING",
        "IW_API_PORT": str(port),
        "IW_API_TOKEN_HASHES": orjson.dumps([hash_token(TOKEN)]).decode(),
        "IW_ENCRYPTION_KEYS": orjson.dumps(
            {"k": base64.urlsafe_b64encode(generate_key()).decode()}
        ).decode(),
        "IW_ENCRYPTION_KEY_ID": "k",
    }
    exe = os.path.join(os.path.dirname(sys.executable), "integration-worker")
    proc = await asyncio.create_subprocess_exec(
        exe, "api", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            url = f"http://127.0.0.1:{port}/api/v1/accounts"
            while True:  # until it listens
                try:
                    async with http.get(url, headers=AUTH) as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            async with http.get(url) as response:
                assert response.status == 401
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _raw_status(base_url: str, request: bytes) -> int:
    """Send raw bytes (headers no HTTP client would encode) and read the status code."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_bad_input_is_a_client_error_never_5xx(api: Api) -> None:
    # Before: a bearer token that is not UTF-8 was a 500 with a traceback (unauthenticated),
    # and a well-formed cursor with a time out of range a 503 "retry later".
    raw = (
        b"GET /api/v1/accounts HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer \xff\xfe\x80tok\r\n"
        b"Connection: close\r\n\r\n"
    )
    assert await _raw_status(api.base_url, raw) == 401
    for created in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        forged = base64.urlsafe_b64encode(
            orjson.dumps(["accounts", created, str(uuid.uuid4())])
        ).decode()
        status, body = await api.call("GET", f"/accounts?cursor={forged.rstrip('=')}")
        assert status == 422 and body["error"]["code"] == "invalid_cursor"


async def test_tampered_cursors_are_refused_never_5xx(api: Api) -> None:
    rng = random.Random(20261207)
    values: list[object] = [
        "accounts",
        "dead-letters",
        "0001-01-01T00:00:00+14:00",
        "2026-01-01T00:00:00",
        "2026-13-40T99:99:99+00:00",
        str(uuid.uuid4()),
        "not-a-uuid",
        -1,
        2**63,
        10**400,
        1.5,
        None,
        True,
        [],
        {},
    ]
    statuses: set[int] = set()
    for _ in range(150):
        payload = [rng.choice(values) for _ in range(rng.randrange(0, 4))]
        if rng.random() < 0.5 and payload:
            payload[0] = rng.choice(["accounts", "dead-letters"])
        raw = json.dumps(payload).encode()  # the stdlib writes any integer
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        path = rng.choice(["/accounts", "/outbox/dead-letters"])
        status, _ = await api.call("GET", f"{path}?cursor={cursor}")
        statuses.add(status)
    assert statuses <= {200, 422}, statuses


async def test_mutating_and_refused_calls_leave_one_audit_record_each(
    api: Api, json_logs: io.StringIO
) -> None:
    # Before: no line for any mutating call, and 401s neither logged nor counted.
    refusals = metrics.api_refusals.labels("401")
    before = refusals._value.get()
    account = await _connect(api, "audit@example.com")
    await api.call("GET", "/accounts")  # a read: not audited
    await api.call("POST", f"/accounts/{account['id']}/disable")
    async with api.http.get(
        api.base_url + "/accounts", headers={"Authorization": "Bearer wrong-token-value"}
    ) as response:
        assert response.status == 401
    records = [
        r
        for r in (orjson.loads(line) for line in json_logs.getvalue().splitlines())
        if r.get("event") == "audit"
    ]
    caller = "sha256:" + hash_token(TOKEN)[:12]
    assert [(r["method"], r["route"], r["outcome"], r["caller"]) for r in records] == [
        ("POST", "/api/v1/accounts", 201, caller),
        ("POST", "/api/v1/accounts/{account_id}/disable", 200, caller),
        ("GET", "/api/v1/accounts", 401, "sha256:" + hash_token("wrong-token-value")[:12]),
    ]
    assert records[1]["target"] == {"account_id": account["id"]}
    assert refusals._value.get() == before + 1
    assert TOKEN not in json_logs.getvalue() and "wrong-token-value" not in json_logs.getvalue()
