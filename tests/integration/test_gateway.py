"""The webhook gateway on a real loopback server, real Postgres and real Redis."""

from __future__ import annotations

import asyncio
import io
import random
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit
from uuid import uuid4

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from cluster.inbox import Inbox
from cluster.keys import GATEWAY_REDIS_ACL, NOTIFICATION_FIELDS, notifications_key, shard_tag
from cluster.streams import Outcome, append_notifications, entry_for
from config.settings import Settings
from gateway.app import STATS, create_app
from gateway.verify import Rejection, plausible_id, token_matches, verify
from providers.google.notifications import parse_notifications as parse_google
from providers.models import Notification, NotificationKind
from sandbox.embedded import EmbeddedRedis, Services
from sandbox.harness.cluster import free_port, wait_for
from store.accounts import Account, create_account
from store.channels import ChannelRow, hash_token, save_channel
from store.db import PgPool
from supervisor.gateway_process import serve

Client: TypeAlias = TestClient[web.Request, web.Application]

MAX_BODY = 4096
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


# --- pure parts ---------------------------------------------------------------------------


def _channel_row(**changes: Any) -> ChannelRow:
    fields: dict[str, Any] = {
        "provider": "google",
        "id": "ch-1",
        "account_id": uuid4(),
        "calendar_id": "primary",
        "shard": 7,
        "token_hash": hash_token("tok"),
        "resource_id": "res-1",
        "expires_at": FUTURE,
    }
    fields.update(changes)
    return ChannelRow(**fields)


def test_layout_uses_cluster_hash_tags() -> None:
    assert notifications_key(17) == "iw:{shard:17}:notifications"
    assert shard_tag(0) == "{shard:0}"
    with pytest.raises(ValueError):
        notifications_key(-1)


def test_entry_fields_are_strings_without_secrets() -> None:
    row = _channel_row()
    note = Notification(NotificationKind.CHANGED, "ch-1", "res-1", 12, token="tok")
    entry = entry_for(row, note, datetime(2026, 1, 1, 13, tzinfo=UTC))
    assert entry.key == "iw:{shard:7}:notifications"
    assert tuple(entry.fields) == NOTIFICATION_FIELDS
    assert entry.fields["message_number"] == "12"
    assert entry.fields["received_at"] == "2026-01-01T13:00:00+00:00"
    assert "tok" not in entry.fields.values()
    unnumbered = entry_for(row, Notification(NotificationKind.RESYNC, "ch-1"), FUTURE)
    assert unnumbered.fields["message_number"] == ""
    with pytest.raises(ValueError):
        entry_for(row, note, datetime(2026, 1, 1))  # naive: refused


def test_verify_outcomes() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = _channel_row()

    def note(token: str | None = "tok", resource: str | None = "res-1") -> Notification:
        return Notification(NotificationKind.CHANGED, "ch-1", resource, token=token)

    assert verify(note(), row, now, check_resource=True) is None
    assert verify(note(), None, now) is Rejection.UNKNOWN_CHANNEL
    assert verify(note(token="tok "), row, now) is Rejection.BAD_TOKEN
    assert verify(note(token=None), row, now) is Rejection.BAD_TOKEN
    assert verify(note(resource="x"), row, now, check_resource=True) is Rejection.RESOURCE_MISMATCH
    assert verify(note(resource="x"), row, now) is None
    assert (
        verify(note(resource="x"), _channel_row(resource_id=None), now, check_resource=True) is None
    )
    assert verify(note(), _channel_row(expires_at=now), now) is Rejection.EXPIRED
    # A replaced channel: accepted through its grace, even past its own expiry (a message sent
    # on it before the replacement, delivered late); refused after.
    retired = _channel_row(expires_at=now, retired_until=now + timedelta(seconds=1))
    assert verify(note(), retired, now) is None
    assert verify(note(token="x"), retired, now) is Rejection.BAD_TOKEN
    assert verify(note(), retired, now + timedelta(seconds=1)) is Rejection.EXPIRED
    assert token_matches("tok", hash_token("tok")) and not token_matches("tok", b"")
    assert plausible_id("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert not any(map(plausible_id, ["", "a\x00b", "a\nb", "é", "x" * 257]))


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=64)


async def _save(
    pool: PgPool,
    account: Account,
    channel_id: str,
    token: str,
    *,
    provider: str = "google",
    shard: int = 3,
    resource_id: str | None = "res-1",
    expires_at: datetime | None = FUTURE,
) -> ChannelRow:
    row = ChannelRow(
        provider=provider,
        id=channel_id,
        account_id=account.id,
        calendar_id="cal-" + channel_id,
        shard=shard,
        token_hash=hash_token(token),
        resource_id=resource_id,
        expires_at=expires_at,
    )
    return await save_channel(pool, row)


async def _client(app: web.Application) -> Client:
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def app(pool: PgPool, redis: Redis) -> web.Application:
    return create_app(pool, redis, max_body_bytes=MAX_BODY)


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[Client]:
    test_client = await _client(app)
    try:
        yield test_client
    finally:
        await test_client.close()


def _google_headers(
    channel_id: str = "g-1",
    token: str | None = "g-token",
    state: str = "exists",
    resource_id: str = "res-1",
    number: str = "5",
) -> dict[str, str]:
    headers = {
        "X-Goog-Channel-ID": channel_id,
        "X-Goog-Resource-ID": resource_id,
        "X-Goog-Resource-State": state,
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/primary/events",
        "X-Goog-Message-Number": number,
    }
    if token is not None:
        headers["X-Goog-Channel-Token"] = token
    return headers


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _entries(redis: Redis, shard: int) -> list[dict[str, str]]:
    raw = await redis.xrange(notifications_key(shard)) or []
    return [{_text(k): _text(v) for k, v in (fields or {}).items()} for _id, fields in raw]


async def _stream_keys(redis: Redis) -> list[str]:
    """The notification streams (the unread markers and message numbers are other keys)."""
    return sorted(_text(key) for key in await redis.keys("iw:*:notifications"))


def _graph_item(subscription_id: str, client_state: str, **extra: str) -> dict[str, str]:
    return {
        "subscriptionId": subscription_id,
        "clientState": client_state,
        "changeType": "updated",
        "resource": "Users/u/Events/e",
        "subscriptionExpirationDateTime": "2099-01-01T00:00:00Z",
        **extra,
    }


async def _post_graph(
    client: Client, items: Sequence[Mapping[str, str]], path: str = "/webhooks/microsoft"
) -> int:
    response = await client.post(
        path,
        data=orjson.dumps({"value": items}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    return response.status


# --- Google -------------------------------------------------------------------------------


async def test_google_changed_is_appended_then_202(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "g-1", "g-token", shard=17)
    before = datetime.now(UTC)
    response = await client.post("/webhooks/google", headers=_google_headers())
    assert response.status == 202
    assert await response.read() == b""
    entries = await _entries(redis, 17)
    assert len(entries) == 1
    entry = entries[0]
    assert tuple(entry) == NOTIFICATION_FIELDS
    assert entry == entry | {
        "provider": "google",
        "account_id": str(account.id),
        "calendar_id": "cal-g-1",
        "channel_id": "g-1",
        "kind": "changed",
        "message_number": "5",
    }
    received_at = datetime.fromisoformat(entry["received_at"])
    assert received_at.utcoffset() == timedelta(0)
    assert before <= received_at <= datetime.now(UTC)
    assert await _stream_keys(redis) == ["iw:{shard:17}:notifications"]
    stats = app[STATS]
    assert (stats.received, stats.appended, stats.rejected.total()) == (1, 1, 0)


async def test_google_forged_token_is_403_and_not_appended(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "g-1", "g-token")
    for token in ("forged", "g-token2", "", None):
        response = await client.post("/webhooks/google", headers=_google_headers(token=token))
        assert response.status == 403
    response = await client.post("/webhooks/google", headers=_google_headers(resource_id="other"))
    assert response.status == 403
    assert await _stream_keys(redis) == []
    assert app[STATS].rejected == {"bad_token": 4, "resource_mismatch": 1}


async def test_google_unknown_expired_and_malformed(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(
        pool, account, "old", "g-token", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    unknown = await client.post("/webhooks/google", headers=_google_headers(channel_id="nope"))
    assert unknown.status == 404
    expired = await client.post("/webhooks/google", headers=_google_headers(channel_id="old"))
    assert expired.status == 410
    headers = _google_headers()
    del headers["X-Goog-Channel-ID"]
    assert (await client.post("/webhooks/google", headers=headers)).status == 400
    headers = _google_headers()
    del headers["X-Goog-Resource-State"]
    assert (await client.post("/webhooks/google", headers=headers)).status == 400
    bad_number = await client.post("/webhooks/google", headers=_google_headers(number="x"))
    assert bad_number.status == 400
    # Before: 4,301 digits and more made int() raise, answered 503 with an ERROR traceback.
    huge = await client.post("/webhooks/google", headers=_google_headers(number="9" * 5000))
    assert huge.status == 400
    assert await _stream_keys(redis) == []
    assert app[STATS].rejected == {"unknown_channel": 1, "expired": 1, "malformed": 4}
    assert app[STATS].unavailable == 0


async def test_google_sync_message_is_acknowledged_not_appended(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "g-1", "g-token")
    response = await client.post("/webhooks/google", headers=_google_headers(state="sync"))
    assert response.status == 200
    assert await _stream_keys(redis) == []
    assert app[STATS].acknowledged == 1
    forged = await client.post("/webhooks/google", headers=_google_headers(state="sync", token="x"))
    assert forged.status == 403
    # A channel whose row is not committed yet (watch answered, the actor's commit pending).
    early = await client.post(
        "/webhooks/google", headers=_google_headers(state="sync", channel_id="g-new")
    )
    assert early.status == 200
    assert await _stream_keys(redis) == []
    assert app[STATS].acknowledged == 2


# --- Microsoft ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks/microsoft", "/webhooks/microsoft/lifecycle"])
async def test_graph_handshake_echoes_decoded_token(client: Client, path: str) -> None:
    token = "Validation: Testing client application reachability +%/&= ü"
    response = await client.post(path, params={"validationToken": token})
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == token
    # Spaces encoded as "+" and a literal "+" as %2B, as form encoding does.
    response = await client.post(path + "?validationToken=a+b%2Bc%25d%20e")
    assert await response.text() == "a b+c%d e"
    # Whatever a stranger sends is echoed as text, never sniffed as markup, and bounded.
    response = await client.post(path, params={"validationToken": "<script>x</script>"})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response = await client.post(path, params={"validationToken": "x" * 5000})
    assert response.status == 400


async def test_graph_batch_across_shards(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "sub-a", "state-a", provider="microsoft", shard=2)
    await _save(pool, account, "sub-b", "state-b", provider="microsoft", shard=40)
    status = await _post_graph(
        client, [_graph_item("sub-a", "state-a"), _graph_item("sub-b", "state-b")]
    )
    assert status == 202
    (a,) = await _entries(redis, 2)
    (b,) = await _entries(redis, 40)
    assert (a["channel_id"], a["calendar_id"], a["kind"], a["provider"]) == (
        "sub-a",
        "cal-sub-a",
        "changed",
        "microsoft",
    )
    assert (b["channel_id"], b["message_number"]) == ("sub-b", "")
    assert app[STATS].appended == 2


async def test_graph_forged_item_dropped_valid_one_kept(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "sub-a", "state-a", provider="microsoft", shard=2)
    await _save(pool, account, "g-a", "state-a", provider="google", shard=2)
    items = [
        _graph_item("sub-a", "forged"),
        _graph_item("sub-a", "state-a"),
        _graph_item("g-a", "state-a"),  # a Google channel id is not a Graph subscription
        _graph_item("unknown", "state-a"),
    ]
    assert await _post_graph(client, items) == 202
    assert len(await _entries(redis, 2)) == 1
    assert app[STATS].rejected == {"bad_token": 1, "unknown_channel": 2}
    # Nothing genuine in a batch: refused.
    assert await _post_graph(client, [_graph_item("sub-a", "forged")]) == 403
    assert len(await _entries(redis, 2)) == 1
    assert await _post_graph(client, []) == 202


async def test_graph_lifecycle_events_map_to_kinds(
    client: Client, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "sub-a", "state-a", provider="microsoft", shard=9)
    items: list[Mapping[str, str]] = [
        {"subscriptionId": "sub-a", "clientState": "state-a", "lifecycleEvent": event}
        for event in ("missed", "reauthorizationRequired", "subscriptionRemoved")
    ]
    assert await _post_graph(client, items, "/webhooks/microsoft/lifecycle") == 202
    kinds = [entry["kind"] for entry in await _entries(redis, 9)]
    assert kinds == ["resync", "reauthorize", "removed"]


async def test_graph_refuses_bad_requests(client: Client, app: web.Application) -> None:
    path = "/webhooks/microsoft"
    body = orjson.dumps({"value": [_graph_item("s", "c")]})
    plain = await client.post(path, data=body, headers={"Content-Type": "text/plain"})
    assert plain.status == 415
    huge = await client.post(
        path, data=b" " * (MAX_BODY + 1), headers={"Content-Type": "application/json"}
    )
    assert huge.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off while reading
        for _ in range(10):
            yield b" " * 1024

    chunked = await client.post(path, data=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status == 413
    for bad in (b"{", b"[]", b'{"value": 1}', b'{"value": [{}]}', b"\xff\xfe"):
        response = await client.post(path, data=bad, headers={"Content-Type": "application/json"})
        assert response.status == 400
    assert app[STATS].rejected == {"unsupported_media_type": 1, "too_large": 2, "malformed": 5}


# --- robustness ---------------------------------------------------------------------------


async def test_routes_and_no_ops_paths(client: Client) -> None:
    assert (await client.get("/webhooks/google")).status == 405
    assert (await client.post("/webhooks/slack")).status == 404
    # Before: the probes and /metrics answered on the internet-facing port; they are on the
    # ops port now (gateway.ops), so the webhook listener knows nothing of them.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 404


def _garbage_text(rng: random.Random) -> str:
    alphabet = "abc-_ 0123456789+%/=\t\"'{}[]:,\\üé\u00a0"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))


_TRICKY_BODIES = [
    b'{"value": [{"subscriptionId": "sub-a", "clientState": 1e999}]}',
    b'{"value": [{"subscriptionId": "sub-a", "n": 123456789012345678901234567890}]}',
    b'{"value": [{"subscriptionId": "\\ud800", "clientState": "\\udc00"}]}',
    b'{"value": [{"subscriptionId": "sub-\\u0000", "clientState": "state-a"}]}',
    b'{"value": [{"subscriptionId": "sub-a", "clientState": "state-a", "lifecycleEvent": 1}]}',
    b"[" * 5000,
]


def _garbage_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(7 if depth < 3 else 4)
    if choice == 0:
        return rng.choice([None, True, 1, -1.5, 2**62])
    if choice == 1:
        return _garbage_text(rng)
    if choice == 2:
        return rng.choice(["sub-a", "state-a", "missed", "", "\u0000", "x" * 300])
    if choice == 3:
        return {}
    if choice == 4:
        return [_garbage_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["value", "subscriptionId", "clientState", "lifecycleEvent", _garbage_text(rng)]
    return {rng.choice(keys): _garbage_json(rng, depth + 1) for _ in range(rng.randrange(5))}


async def test_random_garbage_never_500(
    client: Client, app: web.Application, pool: PgPool, account: Account
) -> None:
    await _save(pool, account, "sub-a", "state-a", provider="microsoft")
    await _save(pool, account, "g-1", "g-token")
    rng = random.Random(20261122)
    paths = ["/webhooks/google", "/webhooks/microsoft", "/webhooks/microsoft/lifecycle", "/x"]
    statuses: set[int] = set()
    for _ in range(300):
        headers = {
            name: _garbage_text(rng)
            for name in rng.sample(
                [*_google_headers(), "X-Goog-Channel-Token", "Content-Type"], rng.randrange(7)
            )
        }
        if rng.random() < 0.5:
            headers["Content-Type"] = "application/json"
        if rng.random() < 0.3:
            headers["X-Goog-Channel-ID"] = rng.choice(["g-1", "sub-a"])
        if rng.random() < 0.2:  # numbers of any size, as a sender may write them
            headers["X-Goog-Message-Number"] = "9" * rng.randrange(1, 6000)
        roll = rng.random()
        if roll < 0.5:
            body = orjson.dumps({"value": _garbage_json(rng)})
        elif roll < 0.6:
            body = rng.choice(_TRICKY_BODIES)
        else:
            body = rng.randbytes(rng.randrange(0, 200))
        response = await client.post(rng.choice(paths), data=body, headers=headers)
        await response.read()
        statuses.add(response.status)
    assert statuses <= {200, 202, 400, 403, 404, 410, 413, 415}, statuses
    assert app[STATS].unavailable == 0


async def test_a_sender_that_hangs_up_mid_body_is_not_an_outage(
    client: Client, app: web.Application
) -> None:
    # Before: the reset read counted as a dependency outage (503, a false alert).
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /webhooks/microsoft HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b'Content-Length: 2000\r\n\r\n{"value": ['
    )
    await writer.drain()
    stats = app[STATS]
    await wait_until(lambda: stats.requests == 1, "the gateway to read the request")
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: stats.client_gone == 1, "the hang-up to be seen")
    assert stats.unavailable == 0
    assert reader.at_eof() or not await reader.read()


async def _read_as_replica(redis: Redis, shard: int) -> int:
    """Read ``shard``'s stream as a replica's inbox does (its first reads take up its own
    backlog); the number of entries routed."""
    inbox = Inbox(redis, "replica-a", lambda _entry: True, lambda _shard: None, block_ms=10)
    routed = 0
    for _ in range(3):
        routed += await inbox.read_once([shard])
    return routed


async def test_a_flood_of_verified_notifications_adds_one_entry_until_it_is_read(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    # Before: every verified message was one more entry (9,433 repeats: 9,433 entries).
    await _save(pool, account, "g-1", "g-token", shard=5)
    await _save(pool, account, "sub-a", "state-a", provider="microsoft", shard=5)
    for number in range(10, 310):
        response = await client.post(
            "/webhooks/google", headers=_google_headers(number=str(number))
        )
        assert response.status == 202  # verified: answered 2xx, folded into the unread entry
        assert await _post_graph(client, [_graph_item("sub-a", "state-a")]) == 202
    assert len(await _entries(redis, 5)) == 2  # one per channel
    assert app[STATS].coalesced == 2 * 300 - 2

    # The replica reads them; a message arriving from now on starts a sync of its own.
    assert await _read_as_replica(redis, 5) == 2
    response = await client.post("/webhooks/google", headers=_google_headers(number="400"))
    assert response.status == 202
    assert len(await _entries(redis, 5)) == 3


async def test_a_replayed_google_message_is_dropped_and_an_outage_records_nothing(
    client: Client, app: web.Application, pool: PgPool, redis: Redis, account: Account
) -> None:
    await _save(pool, account, "g-1", "g-token", shard=6)
    # The append fails (the stream key holds a string): 503, and nothing is recorded...
    await redis.set("iw:{shard:6}:notifications", "not a stream")
    response = await client.post("/webhooks/google", headers=_google_headers(number="7"))
    assert response.status == 503
    await redis.delete("iw:{shard:6}:notifications")
    # ...so Google's retry of the same message is accepted.
    response = await client.post("/webhooks/google", headers=_google_headers(number="7"))
    assert response.status == 202
    assert len(await _entries(redis, 6)) == 1 and app[STATS].appended == 1
    assert await _read_as_replica(redis, 6) == 1  # the next message gets an entry of its own
    for replay in ("7", "6", "07"):
        response = await client.post("/webhooks/google", headers=_google_headers(number=replay))
        assert response.status == 202  # verified, so never a 4xx; but dropped
    assert app[STATS].replayed == 3 and len(await _entries(redis, 6)) == 1
    response = await client.post("/webhooks/google", headers=_google_headers(number="8"))
    assert response.status == 202 and len(await _entries(redis, 6)) == 2


async def test_redis_down_is_503_then_recovers(pool: PgPool, account: Account) -> None:
    await _save(pool, account, "g-1", "g-token", shard=4)
    with tempfile.TemporaryDirectory(prefix="iw-gw-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis").start()
        redis = Redis.from_url(server.url)
        app = create_app(pool, redis)
        client = await _client(app)
        try:
            server.kill()
            response = await client.post("/webhooks/google", headers=_google_headers())
            assert response.status == 503
            assert await response.read() == b""
            assert app[STATS].unavailable == 1
            server.start()
            response = await client.post("/webhooks/google", headers=_google_headers())
            assert response.status == 202
            assert len(await _entries(redis, 4)) == 1
        finally:
            await client.close()
            await redis.aclose()
            server.stop()


async def test_secrets_never_logged(
    client: Client, pool: PgPool, account: Account, json_logs: io.StringIO
) -> None:
    await _save(pool, account, "g-1", "g-token-SECRET1")
    await _save(pool, account, "sub-a", "state-SECRET2", provider="microsoft")
    await client.post("/webhooks/google", headers=_google_headers(token="forged-SECRET3"))
    await client.post("/webhooks/google", headers=_google_headers(token="g-token-SECRET1"))
    await _post_graph(client, [_graph_item("sub-a", "forged-SECRET4")])
    await _post_graph(client, [_graph_item("sub-a", "state-SECRET2")])
    await client.post("/webhooks/microsoft", params={"validationToken": "handshake-SECRET5"})
    output = json_logs.getvalue()
    assert "notification rejected" in output and "notifications rejected" in output
    assert "SECRET" not in output


async def test_a_flooded_graph_batch_costs_one_log_line_and_one_entry(
    pool: PgPool, redis: Redis, account: Account, json_logs: io.StringIO
) -> None:
    # Before: one 1 MB POST made one INFO line per rejected item (20,834), and one captured
    # item repeated 9,433 times made 9,433 stream entries.
    await _save(pool, account, "sub-a", "state-a", provider="microsoft")
    app = create_app(pool, redis, max_body_bytes=1 << 20)
    flood_client = await _client(app)
    try:
        forged = [_graph_item("sub-a", f"forged-{i}") for i in range(2000)]
        unknown = [_graph_item(f"sub-{i}", "x") for i in range(2000)]
        assert await _post_graph(flood_client, [*forged, *unknown]) == 403
        replayed = [_graph_item("sub-a", "state-a")] * 3000
        assert await _post_graph(flood_client, replayed) == 202
    finally:
        await flood_client.close()
    lines = [orjson.loads(line) for line in json_logs.getvalue().splitlines()]
    summaries = [r for r in lines if r.get("event") == "notifications rejected"]
    assert len(summaries) == 1
    assert summaries[0]["reasons"] == [["bad_token", 2000], ["unknown_channel", 2000]]
    assert not [r for r in lines if r.get("event") == "notification rejected"]
    assert len(await _entries(redis, 3)) == 1  # the channel's shard
    assert app[STATS].coalesced == 2999 and app[STATS].appended == 1


async def test_serve_splits_webhooks_and_ops_ports(services: Services, database_url: str) -> None:
    port, ops_port = free_port(), free_port()
    settings = Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(services.redis_url),
        ops_port=ops_port,
    )
    task = asyncio.create_task(serve(settings, host="127.0.0.1", port=port))
    try:
        async with aiohttp.ClientSession() as session:

            async def status(url: str) -> int | None:
                try:
                    async with session.get(url) as response:
                        return response.status
                except aiohttp.ClientConnectionError:
                    return None

            ops, webhooks = f"http://127.0.0.1:{ops_port}", f"http://127.0.0.1:{port}"

            async def listening() -> bool:
                return await status(f"{ops}/healthz") == 200

            await wait_for(listening, "the gateway's ops listener")
            assert await status(f"{ops}/readyz") == 200
            assert await status(f"{ops}/metrics") == 200
            assert await status(f"{ops}/webhooks/google") == 404  # no webhooks on the ops port
            assert await status(f"{webhooks}/webhooks/google") == 405  # POST only
            for path in ("/healthz", "/readyz", "/metrics"):
                assert await status(f"{webhooks}{path}") == 404
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def google_notification_for(channel_id: str) -> Notification:
    (notification,) = parse_google(_google_headers(channel_id=channel_id))
    return notification


async def test_the_gateways_redis_user_can_append_and_nothing_else(
    redis: Redis, services: Services, pool: PgPool, account: Account
) -> None:
    # Before: the gateway used the replicas' Redis user, free to read, delete or reconfigure.
    password = secrets.token_urlsafe(24)
    user = f"gw-{secrets.token_hex(4)}"
    rules = [*GATEWAY_REDIS_ACL.split(), f">{password}"]
    await redis.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]
    url = urlsplit(services.redis_url)
    limited = Redis.from_url(url._replace(netloc=f"{user}:{password}@{url.netloc}").geturl())
    try:
        assert await limited.ping()
        channel = await _save(pool, account, "g-acl", "g-token", shard=9)
        notification = google_notification_for("g-acl")
        entry = entry_for(channel, notification, datetime.now(UTC))
        [(outcome, _)] = await append_notifications(limited, [entry])
        assert outcome is Outcome.APPENDED
        refused = [
            limited.xreadgroup("g", "c", {"iw:{shard:9}:notifications": ">"}),
            limited.delete("iw:{shard:9}:notifications"),
            limited.config_get("*"),
            limited.keys("*"),
            limited.set("iw:{shard:9}:lease", "mine"),
            limited.xadd("iw:{members}", {"x": "1"}),
        ]
        for call in refused:
            with pytest.raises(NoPermissionError):
                await call
    finally:
        await limited.aclose()
        await redis.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
