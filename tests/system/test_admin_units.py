"""The admin API's pure parts: cursors, token checks, the OpenAPI document, request checks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from admin import cursor
from admin.accounts import SYNC_NOW_KIND, account_entry
from admin.auth import hash_token, token_accepted
from admin.errors import ApiError
from admin.models import EnqueueRequest
from admin.outbox import request_of
from admin.routes import PREFIX, ROUTES, document
from cluster.inbox import parse_entry
from cluster.keys import NOTIFICATION_FIELDS
from config.settings import ConfigError, load_settings
from outbox.model import Operation
from store.accounts import Account
from store.preferences import Preferences, default_preferences

EXE = os.path.join(os.path.dirname(sys.executable), "integration-worker")
WHEN = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


# --- cursors ------------------------------------------------------------------------------


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    account_id = uuid4()
    assert cursor.decode_accounts(cursor.encode_accounts(WHEN, account_id)) == (WHEN, account_id)
    assert cursor.decode_dead_letters(cursor.encode_dead_letters(42)) == 42
    dead = cursor.encode_dead_letters(42)
    for bad in ("", "!!", "bm9wZQ", dead):
        with pytest.raises(cursor.CursorError):
            cursor.decode_accounts(bad)
    with pytest.raises(cursor.CursorError):
        cursor.decode_dead_letters(cursor.encode_accounts(WHEN, account_id))


# --- tokens -------------------------------------------------------------------------------


def test_only_a_bearer_token_with_a_configured_hash_passes() -> None:
    hashes = [hash_token("one"), hash_token("two").upper()]
    assert hash_token("one") == hashlib.sha256(b"one").hexdigest()
    assert token_accepted("Bearer one", hashes)
    assert token_accepted("bearer two", hashes)
    for header in (None, "", "Bearer", "Bearer ", "Basic one", "Bearer three", "one"):
        assert not token_accepted(header, hashes)


def test_token_hashes_must_be_sha256_hex() -> None:
    good = hash_token("t")
    assert load_settings(api_token_hashes=[good.upper()]).api_token_hashes == [good]
    with pytest.raises(ConfigError) as refused:
        load_settings(api_token_hashes=["plain-token-by-mistake"])
    assert "IW_API_TOKEN_HASHES" in str(refused.value)
    assert "plain-token-by-mistake" not in str(refused.value)


async def test_hash_token_command_reads_stdin_and_prints_the_hash() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
    proc = await asyncio.create_subprocess_exec(
        EXE,
        "api",
        "hash-token",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    token = "s3cret-token-of-at-least-32-characters"
    async with asyncio.timeout(60):
        out, err = await proc.communicate(token.encode() + b"\n")
    assert proc.returncode == 0
    assert out.decode().strip() == hash_token(token)
    assert token.encode() not in out + err


async def test_hash_token_command_refuses_a_short_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
    proc = await asyncio.create_subprocess_exec(
        EXE,
        "api",
        "hash-token",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(b"short-token\n")
    assert proc.returncode == 1 and out == b""
    assert b"at least 32 characters" in err and b"short-token" not in err


async def test_api_command_without_token_hashes_refuses_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
    proc = await asyncio.create_subprocess_exec(
        EXE, "api", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 2 and out == b""
    (line,) = err.decode().strip().splitlines()
    assert line.startswith("invalid configuration: IW_API_TOKEN_HASHES")


# --- the OpenAPI document -----------------------------------------------------------------


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_document_describes_each_route_with_resolvable_schemas() -> None:
    doc = document()
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert operations == {(r.method, PREFIX + r.path) for r in ROUTES}
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for route in ROUTES:
        op = doc["paths"][PREFIX + route.path][route.method.lower()]
        assert str(route.status) in op["responses"]
        assert ("401" in op["responses"]) is not route.public
        assert (op.get("security") == []) is route.public
        for param in op.get("parameters", []):
            assert "anyOf" not in param["schema"] and param["schema"].get("type") != "null"


def test_document_never_names_a_secret_in_an_answer() -> None:
    answers: list[Any] = [
        r["content"]["application/json"]["schema"]
        for ops in document()["paths"].values()
        for op in ops.values()
        for r in op["responses"].values()
        if "content" in r
    ]
    names = {ref.rsplit("/", 1)[1] for ref in _refs(answers)}
    schemas = document()["components"]["schemas"]
    for name in names:
        assert "refresh_token" not in schemas[name].get("properties", {})


# --- sync now, preferences, outbox requests -----------------------------------------------


def test_sync_now_entry_is_a_stream_entry_the_inbox_parses() -> None:
    account = Account(uuid4(), "microsoft", "x@example.com", 3, "active", None, WHEN, WHEN)
    entry = account_entry(account, SYNC_NOW_KIND, WHEN)
    assert entry.key == "iw:{shard:3}:notifications" and tuple(entry.fields) == NOTIFICATION_FIELDS
    parsed = parse_entry(3, "1-0", dict(entry.fields.items()))
    assert parsed.account_id == str(account.id) and parsed.kind == SYNC_NOW_KIND
    assert parsed.calendar_id == ""


def test_preferences_bounds_and_defaults() -> None:
    assert default_preferences(900.0) == Preferences(True, 15, None, None)
    assert default_preferences(1.0).sync_frequency_minutes == 1
    assert default_preferences(10**9).sync_frequency_minutes == 1440
    for bad in (
        {"sync_frequency_minutes": 0},
        {"sync_window_back_days": -1},
        {"sync_window_ahead_days": 0},
    ):
        with pytest.raises(ValueError):
            Preferences(**bad)  # type: ignore[arg-type]


def _enqueue(**fields: Any) -> EnqueueRequest:
    return EnqueueRequest.model_validate(
        {"account_id": str(uuid4()), "workspace_id": "w", **fields}
    )


def test_outbox_requests_go_through_the_client_checks() -> None:
    source = {"source_type": "t", "source_id": "1", "event_type": "E", "version": 1}
    rebuild = request_of(_enqueue(operation="REBUILD_ALL"))
    assert rebuild.operation is Operation.REBUILD_ALL and rebuild.calendar_id == "primary"
    cancel = request_of(_enqueue(operation="CANCEL_EVENT", **source))
    assert cancel.operation is Operation.CANCEL_EVENT and cancel.version == 1
    upsert = _enqueue(
        operation="UPSERT_EVENT",
        title="T",
        start="2026-03-02T10:00:00+01:00",
        end="2026-03-02T11:00:00+01:00",
        **source,
    )
    timing = request_of(upsert).content
    assert timing is not None and timing.timing.start_at == datetime(2026, 3, 2, 9, tzinfo=UTC)
    for wrong in (
        {"start": None},  # half a timed event
        {"start_date": "2026-03-02", "end_date": "2026-03-03"},  # both kinds
        {"time_zone": "Not/AZone"},
        {"end": "2026-03-02T08:00:00+01:00"},  # before its start
    ):
        body = _enqueue(**{**upsert.root.model_dump(mode="json"), **wrong})
        with pytest.raises(ApiError) as refused:
            request_of(body)
        assert refused.value.status == 422
