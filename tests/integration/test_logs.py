"""Logging: real rendered output must never contain secrets, wherever they were put."""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from pydantic import SecretStr

from config.logs import bind_log_context, configure_logging, log_context
from config.redact import (
    REDACTED,
    clear_registered_secrets,
    is_secret_key,
    redact_event,
    redact_text,
    redact_value,
    register_secret,
    register_secrets,
)

ACCESS = "ya29.a0AfH6SMBx3kQ7Lp_Zt9vR2mN8cW4yJ1hG6fD0sA5eU3iO7pK9lB2nM4vC6xZ8wQ1"
REFRESH = "1//0gLxQ5vT8mK2pR7sW9yB4nC6hJ3fD1gA0eZ5uI8oP2lK4jH6gFqwErty"
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5cXyZ"
)
MS_REFRESH = "M.C507_BAY.0.U.-CgUjXz9!yQk4*Rt7$vWp2LmN8bH3sD6fG1aZ0eK5cJ"
OPAQUE = "Qx7vT2mK9pR4sW8yB3nC6hJ1fD5gA0eZuI7oP2lK"  # 40 chars, no recognisable shape
PG_PASSWORD = "S3cr3tPgPassw0rdZZ"
DSN = f"postgresql://calendar_app:{PG_PASSWORD}@db.internal:5432/calendar"
SECRETS = (ACCESS, REFRESH, JWT, MS_REFRESH, OPAQUE, PG_PASSWORD)
ACCOUNT_ID = "acct-7f3e2a"


@pytest.fixture
def stream(json_logs: io.StringIO) -> Iterator[io.StringIO]:
    """JSON logging into a StringIO with one opaque secret registered."""
    register_secret(OPAQUE)
    yield json_logs
    clear_registered_secrets()


def records(out: io.StringIO, *loggers: str) -> list[dict[str, Any]]:
    """Parsed JSON lines from ``loggers`` (libraries such as asyncio also log at DEBUG)."""
    parsed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    return [record for record in parsed if record.get("logger") in loggers]


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        # Partial leaks count too: no distinctive tail of any secret may survive.
        assert secret[-12:] not in text


def test_secrets_in_event_message(stream: io.StringIO) -> None:
    log = structlog.get_logger("sync")
    log.info(
        f"refreshing {ACCESS} with {REFRESH}; id_token {JWT}; msa {MS_REFRESH}; "
        f"opaque {OPAQUE}; dsn {DSN}",
        account_id=ACCOUNT_ID,
        token_expires_at="2030-01-01T00:00:00Z",
    )
    assert_no_secrets(stream.getvalue())
    [record] = records(stream, "sync")
    assert record["account_id"] == ACCOUNT_ID
    assert record["token_expires_at"] == "2030-01-01T00:00:00Z"
    assert record["level"] == "info"
    assert record["logger"] == "sync"
    assert record["timestamp"].endswith("Z")
    assert "postgresql://calendar_app:[REDACTED]@db.internal:5432/calendar" in record["event"]


def _refresh(account_id: str) -> None:
    try:
        raise ValueError(f"upstream said: invalid_grant for {ACCESS}")
    except ValueError as exc:
        raise RuntimeError(f"refresh of {account_id} failed: {REFRESH} {OPAQUE} {DSN}") from exc


def test_secrets_in_exception_and_traceback(stream: io.StringIO) -> None:
    log = structlog.get_logger("actor")
    try:
        _refresh(ACCOUNT_ID)
    except RuntimeError:
        log.exception("token refresh crashed", account_id=ACCOUNT_ID)
    assert_no_secrets(stream.getvalue())
    [record] = records(stream, "actor")
    exception = record["exception"]
    assert "Traceback (most recent call last)" in exception
    assert "in _refresh" in exception
    assert f"RuntimeError: refresh of {ACCOUNT_ID} failed: {REDACTED}" in exception
    assert "ValueError: upstream said: invalid_grant for [REDACTED]" in exception
    assert record["level"] == "error"


def test_secrets_nested_deep(stream: io.StringIO) -> None:
    payload = {
        "level1": {
            "level2": [
                {
                    "level3": (
                        {
                            "headers": {"Authorization": f"Bearer {OPAQUE}", "Accept": "json"},
                            "refresh_token": REFRESH,
                            "note": f"retry with access_token={ACCESS}&client_id=abc",
                            "items": [[f"jwt={JWT}", MS_REFRESH, SecretStr("hidden-value")]],
                        },
                    )
                }
            ],
            "token_count": 3,
        },
        "dsn": DSN,
    }
    structlog.get_logger("store").info("saved", payload=payload, account_id=ACCOUNT_ID)
    out = stream.getvalue()
    assert_no_secrets(out)
    assert "hidden-value" not in out
    [record] = records(stream, "store")
    level3 = record["payload"]["level1"]["level2"][0]["level3"][0]
    assert level3["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert level3["refresh_token"] == REDACTED
    assert level3["note"] == f"retry with access_token={REDACTED}&client_id=abc"
    assert level3["items"] == [[f"jwt={REDACTED}", REDACTED, REDACTED]]
    assert record["payload"]["level1"]["token_count"] == 3
    assert record["account_id"] == ACCOUNT_ID


def test_payload_objects_are_not_mutated(stream: io.StringIO) -> None:
    payload = {"refresh_token": REFRESH, "inner": [ACCESS]}
    structlog.get_logger("store").info("x", payload=payload)
    assert payload == {"refresh_token": REFRESH, "inner": [ACCESS]}


def test_stdlib_records_are_redacted(stream: io.StringIO) -> None:
    headers = {"Authorization": f"Bearer {OPAQUE}", "X-Account": ACCOUNT_ID}
    logging.getLogger("aiohttp.client").warning("request to %s failed: %r", DSN, headers)
    try:
        raise ConnectionError(f"could not connect with {DSN} using {ACCESS}")
    except ConnectionError:
        logging.getLogger("asyncpg.pool").exception("pool error for %s", ACCOUNT_ID)
    assert_no_secrets(stream.getvalue())
    first, second = records(stream, "aiohttp.client", "asyncpg.pool")
    assert first["logger"] == "aiohttp.client"
    assert first["level"] == "warning"
    assert ACCOUNT_ID in first["event"]
    assert second["logger"] == "asyncpg.pool"
    assert second["event"] == f"pool error for {ACCOUNT_ID}"
    assert "ConnectionError: could not connect with" in second["exception"]


def test_console_format_is_redacted() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        configure_logging("info", "console", stream=out)
        register_secret(OPAQUE)
        log = structlog.get_logger("console")
        try:
            _refresh(ACCOUNT_ID)
        except RuntimeError:
            log.exception("crashed", password=PG_PASSWORD, account_id=ACCOUNT_ID)
        logging.getLogger("aiohttp.client").info("dsn %s", DSN)
        log.debug("not shown at info level")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
        clear_registered_secrets()
    text = out.getvalue()
    assert_no_secrets(text)
    assert "crashed" in text
    assert ACCOUNT_ID in text
    assert "Traceback (most recent call last)" in text
    assert "not shown" not in text


def test_other_handlers_see_redacted_structlog_events(
    stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        structlog.get_logger("caplog").info(f"with {ACCESS}", refresh_token=REFRESH)
    [record] = [r for r in caplog.records if r.name == "caplog"]
    assert_no_secrets(repr(record.msg))
    assert_no_secrets(stream.getvalue())


def test_configure_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    structlog.get_logger("once").info("hello")
    structlog.get_logger("once").debug("filtered")
    assert [r["event"] for r in records(stream, "once")] == ["hello"]


async def test_log_context_merge(stream: io.StringIO) -> None:
    log = structlog.get_logger("actors")

    async def actor(account_id: str) -> None:
        bind_log_context(account_id=account_id, actor="calendar_sync")
        token = bind_log_context(shard=7)
        log.info("tick")
        log.info("override", actor="explicit")
        log_context.reset(token)
        log.info("after reset")

    await asyncio.gather(actor("a1"), actor("a2"))
    log.info("outside")

    by_account: dict[str | None, list[dict[str, Any]]] = {}
    for record in records(stream, "actors"):
        by_account.setdefault(record.get("account_id"), []).append(record)
    for account_id in ("a1", "a2"):
        tick, override, after = by_account[account_id]
        assert (tick["actor"], tick["shard"]) == ("calendar_sync", 7)
        assert override["actor"] == "explicit"  # the event's own key wins
        assert after["actor"] == "calendar_sync"
        assert "shard" not in after
    [outside] = by_account[None]
    assert outside["event"] == "outside"
    assert "actor" not in outside
    assert log_context.get() is None


def test_log_context_accepts_any_items_provider(stream: io.StringIO) -> None:
    class Cell:
        """Like an actor cell: its own log context, no dict allocated per task."""

        def items(self) -> tuple[tuple[str, object], ...]:
            return (("actor", "cal-1"), ("kind", "calendar"))

    token = log_context.set(Cell())
    try:
        bind_log_context(attempt=2)
        structlog.get_logger("cells").info("started", kind="explicit")
    finally:
        log_context.reset(token)
    [record] = records(stream, "cells")
    assert (record["actor"], record["kind"], record["attempt"]) == ("cal-1", "explicit", 2)


def test_contextvars_still_merged(stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="r-1", refresh_token=REFRESH)
    try:
        structlog.get_logger("ctx").info("with contextvars")
    finally:
        structlog.contextvars.clear_contextvars()
    [record] = records(stream, "ctx")
    assert record["request_id"] == "r-1"
    assert record["refresh_token"] == REDACTED


def test_many_registered_secrets_long_message(stream: io.StringIO) -> None:
    registered = [secrets.token_urlsafe(30) for _ in range(50_000)]
    register_secrets(registered)
    unregistered = [secrets.token_urlsafe(30) for _ in range(500)]
    chosen = registered[::100]
    parts = []
    for i, value in enumerate(chosen):
        parts.append(f"item {i}: secret {value}, neighbour {unregistered[i]};")
        parts.append(f"path /calendars/{value}/events and url ?x={value}&y=1.")
    message = " ".join(parts)
    assert len(message) > 50_000

    redacted = redact_text(message)

    for value in chosen:
        assert value not in redacted
    for value in unregistered:
        assert value in redacted  # nothing over-redacted
    assert redacted.count(REDACTED) == 3 * len(chosen)

    structlog.get_logger("bulk").info(message)
    [record] = records(stream, "bulk")
    assert record["event"] == redacted


def test_registered_secret_edges() -> None:
    try:
        register_secret("short")  # ignored: too short to be a credential
        register_secret("p@ss word!#with-punctuation", pinned=True)  # configured
        register_secret("learned but not token-shaped!")  # ignored: no token looks like it
        register_secret("paddedOpaqueValue123==")
        register_secret("-dashEdgedOpaqueValue_")
        assert redact_text("a short story") == "a short story"
        assert redact_text("pw is p@ss word!#with-punctuation.") == f"pw is {REDACTED}."
        assert redact_text("learned but not token-shaped!") == "learned but not token-shaped!"
        assert redact_text("x paddedOpaqueValue123 y") == f"x {REDACTED} y"
        # Edge punctuation (padding, a sentence's full stop) may stay; the secret's body may not.
        assert redact_text("(paddedOpaqueValue123==).") == f"({REDACTED}==)."
        assert redact_text("got -dashEdgedOpaqueValue_.") == f"got -{REDACTED}_."
        assert redact_text("x/-dashEdgedOpaqueValue_/y") == f"x/-{REDACTED}_/y"
        register_secret("abc/def+ghi/jklmnop")  # standard base64 may contain "/"
        assert redact_text("k=abc/def+ghi/jklmnop&z") == f"k={REDACTED}&z"
    finally:
        clear_registered_secrets()


def test_a_flood_of_learned_secrets_never_evicts_a_configured_one() -> None:
    try:
        register_secrets(["configured-client-secret-0001", "p@ss:word/x"], pinned=True)
        register_secrets(f"learned-{i:07d}-value" for i in range(100_050))  # past the cap
        assert redact_text("sent configured-client-secret-0001") == f"sent {REDACTED}"
        assert redact_text("pw p@ss:word/x") == f"pw {REDACTED}"
        assert redact_text("learned-0000000-value") == "learned-0000000-value"  # evicted
        assert redact_text("learned-0100049-value") == REDACTED
    finally:
        clear_registered_secrets()


def test_a_registered_word_never_rewrites_event_keys(stream: io.StringIO) -> None:
    register_secret("timestamp")  # as a client's code= once could
    structlog.get_logger("keys").info("plain", provider="google", timestamp_s=3)
    [record] = records(stream, "keys")
    assert "timestamp" in record and record["provider"] == "google"
    assert record["timestamp_s"] == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {OPAQUE}", "Authorization: [REDACTED]"),
        (f"headers Bearer {OPAQUE} sent", "headers Bearer [REDACTED] sent"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic [REDACTED]"),
        ("redis://:r3disPassw0rd@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        (
            "https://login.microsoftonline.com/common/oauth2/v2.0/token?client_id=abc"
            "&client_secret=s3cr3tValue&code=0.AXYZabcdefghijklmnop&grant_type=authorization_code",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token?client_id=abc"
            "&client_secret=[REDACTED]&code=[REDACTED]&grant_type=authorization_code",
        ),
        ("status code=404", "status code=404"),
        # The connect flow's state (43 characters) in an access log line; short states stay.
        (
            "GET /oauth/google/callback?state=st4teV4lueOfTheConnectFlow0123456789abcdefg&x=1",
            "GET /oauth/google/callback?state=[REDACTED]&x=1",
        ),
        ("actor state=quarantined", "actor state=quarantined"),
        (
            '{"refresh_token": "opaque-value-1", "expires_in": 3599, "token_type": "Bearer"}',
            '{"refresh_token": "[REDACTED]", "expires_in": 3599, "token_type": "Bearer"}',
        ),
        ('body={\\"password\\": \\"hunter22\\"}', 'body={\\"password\\": \\"[REDACTED]\\"}'),
        (
            "Token(access_token='abcdefgh1', refresh_token=None, expires_at=5)",
            f"Token(access_token='{REDACTED}', refresh_token=None, expires_at=5)",
        ),
        ("clientState=subscription-secret-1", "clientState=[REDACTED]"),
        ("Cookie: session=abc; other=def", "Cookie: [REDACTED]"),
        ("nothing secret here, id=42 at 12:30:00", "nothing secret here, id=42 at 12:30:00"),
    ],
)
def test_redact_text_patterns(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("access_token", True),
        ("refreshToken", True),
        ("id_token", True),
        ("client_secret", True),
        ("Authorization", True),
        ("x-api-key", True),
        ("clientState", True),
        ("db_password", True),
        ("credentials", True),
        ("token_expires_at", False),
        ("tokenExpiresAt", False),
        ("tokens_count", False),
        ("credential_id", False),
        ("token_type", False),
        ("nextSyncToken", False),
        ("account_id", False),
        ("event", False),
    ],
)
def test_secret_key_rule(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redaction_never_raises() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class LeakyRepr:
        def __repr__(self) -> str:
            return f"LeakyRepr({ACCESS})"

    class BrokenMapping(dict[str, object]):
        def items(self) -> Any:
            raise RuntimeError("broken")

    assert redact_value(BadRepr()) == "[UNREPRESENTABLE]"
    assert redact_value(LeakyRepr()) == f"LeakyRepr({REDACTED})"
    assert redact_value(2**80) == str(2**80)
    assert redact_value(b"token=" + ACCESS.encode()) == f"token={REDACTED}"
    event = BrokenMapping(event=ACCESS, level="info")
    assert redact_event(None, "info", event) == {"event": "[REDACTION FAILED]", "level": "info"}
