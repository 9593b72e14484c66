"""``integration-worker outbox ...``: the real executable against a real database, plus the
argument checks and formatters called directly."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest

from operations.accounts import OperatorError
from outbox.model import EventContent, ItemState, Operation, OutboxItem, SourceKey
from providers.models import EventTiming
from sandbox.embedded import Services
from store import outbox as store
from store.accounts import Account, create_account
from store.db import PgPool
from supervisor.command_line import add_outbox_commands
from supervisor.outbox_commands import (
    USAGE,
    age_text,
    dead_letters_table,
    enqueue,
    enqueue_command,
    status_json,
    status_text,
)
from tests.system.test_cli import cli_env, run_cli

FAR = datetime(2100, 1, 1, tzinfo=UTC)
ACCOUNT = "00000000-0000-0000-0000-00000000000a"
SOURCE_ARGS = (
    "--workspace",
    "w1",
    "--source-type",
    "task",
    "--source-id",
    "t-1",
    "--event-type",
    "BLOCKER_DEADLINE",
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="integration-worker")
    add_outbox_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["outbox", *argv])


def enqueue_args(*argv: str) -> argparse.Namespace:
    return parse("enqueue", "--account", ACCOUNT, *argv)


@pytest.fixture
def env(database_url: str, services: Services) -> dict[str, str]:
    return cli_env(database_url, services.redis_url, IW_SHARD_COUNT="8")


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=8)


async def outbox(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_cli(env, "outbox", *args)


# ---------------------------------------------------------------------------------------------
# Argument checks and formatting, without a process


def test_enqueue_arguments_become_checked_requests() -> None:
    timed = enqueue_command(
        enqueue_args(
            *SOURCE_ARGS,
            "--version",
            "2",
            "--title",
            "Review",
            "--start",
            "2026-03-02T09:30:00+01:00",
            "--end",
            "2026-03-02T10:00:00Z",
            "--time-zone",
            "Europe/Paris",
        )
    )
    assert timed.operation is Operation.UPSERT_EVENT
    assert timed.content is not None
    assert timed.content.timing == EventTiming(
        all_day=False,
        start_at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC),
        end_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
        time_zone="Europe/Paris",
    )
    all_day = enqueue_command(
        enqueue_args(
            *SOURCE_ARGS,
            "--version=3",
            "--title=Deadline",
            "--all-day",
            "--start-date=2026-03-05",
            "--end-date=2026-03-06",
            "--calendar=team",
        )
    )
    assert all_day.calendar_id == "team"
    assert all_day.content is not None
    assert all_day.content.timing.start_date == date(2026, 3, 5)
    cancel = enqueue_command(enqueue_args("--cancel", *SOURCE_ARGS, "--version", "4"))
    assert (cancel.operation, cancel.version, cancel.content) == (Operation.CANCEL_EVENT, 4, None)
    rebuild = enqueue_command(enqueue_args("--rebuild", "--workspace", "w1"))
    assert (rebuild.operation, rebuild.source, rebuild.calendar_id) == (
        Operation.REBUILD_ALL,
        None,
        "primary",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("--rebuild", *SOURCE_ARGS),
            "--rebuild takes no --source-type, --source-id, --event-type",
        ),
        (("--rebuild", "--workspace=w1", "--version=0"), "--rebuild takes no --version"),
        (("--cancel", *SOURCE_ARGS, "--version=1", "--title=x"), "--cancel takes no --title"),
        (("--cancel", "--workspace=w1", "--version=1"), "--cancel needs --source-type"),
        ((*SOURCE_ARGS, "--version=1", "--start=2026-03-02T09:00:00Z"), "needs --title, --end"),
        (
            (*SOURCE_ARGS, "--version=1", "--title=x", "--all-day", "--start=2026-03-02"),
            "an --all-day upsert takes no --start",
        ),
        (
            (*SOURCE_ARGS, "--version=1", "--title=x", "--start=2026-03-02T09:00:00", "--end=x"),
            "--start: '2026-03-02T09:00:00' has no UTC offset",
        ),
        (
            (*SOURCE_ARGS, "--version=1", "--title=x", "--start=soon", "--end=later"),
            "--start: 'soon' is not an ISO 8601 datetime",
        ),
        (
            (
                *SOURCE_ARGS,
                "--version=1",
                "--title=x",
                "--start=2026-03-02T10:00:00Z",
                "--end=2026-03-02T09:00:00Z",
            ),
            "end must not be before start",
        ),
        (
            (
                *SOURCE_ARGS,
                "--version=1",
                "--title=x",
                "--all-day",
                "--start-date=2026-03-02",
                "--end-date=2026-03-02",
            ),
            "an all-day end is exclusive",
        ),
        (
            (
                *SOURCE_ARGS,
                "--version=1",
                "--title=x",
                "--all-day",
                "--start-date=3/2/26",
                "--end-date=2026-03-03",
            ),
            "--start-date: '3/2/26' is not an ISO 8601 date",
        ),
        (("--cancel", *SOURCE_ARGS, "--version=-1"), "version must be between 0"),
        (("--rebuild", "--workspace="), "workspace_id must not be empty"),
    ],
)
def test_malformed_enqueue_arguments_are_usage_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(OperatorError) as info:
        enqueue_command(enqueue_args(*argv))
    assert message in str(info.value)
    assert info.value.exit_code == USAGE


def test_a_malformed_account_is_a_usage_error() -> None:
    with pytest.raises(OperatorError, match="--account: 'nope' is not a UUID"):
        enqueue_command(parse("enqueue", "--account", "nope", "--rebuild", "--workspace", "w"))


def test_formatting() -> None:
    assert [age_text(timedelta(seconds=s)) for s in (0, 59, 3723, 90061, -5)] == [
        "0s",
        "59s",
        "1h 2m 3s",
        "1d 1h",
        "0s",
    ]
    report = store.OutboxStatus(
        counts={ItemState.PENDING: 2, ItemState.DONE: 5},
        oldest_pending_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        oldest_pending_age=timedelta(minutes=3),
    )
    assert status_text(report).splitlines() == [
        "pending      2",
        "done         5",
        "skipped      0",
        "dead_letter  0",
        "oldest pending: 3m ago (2026-03-02T09:00:00Z)",
    ]
    assert status_json(store.OutboxStatus(counts=dict.fromkeys(ItemState, 0))) == {
        "counts": {"pending": 0, "done": 0, "skipped": 0, "dead_letter": 0},
        "oldest_pending_at": None,
        "oldest_pending_age_s": None,
    }
    letter = OutboxItem(
        id=7,
        account_id=UUID(ACCOUNT),
        operation=Operation.REBUILD_ALL,
        workspace_id="w1",
        calendar_id="primary",
        source=None,
        version=0,
        content=None,
        state=ItemState.DEAD_LETTER,
        attempts=10,
        last_error="Permanent: calendar\n  not found",
    )
    assert dead_letters_table([letter]).splitlines() == [
        "ID  ACCOUNT                               OPERATION    SOURCE  ATTEMPTS  LAST ERROR",
        f"7   {ACCOUNT}  REBUILD_ALL  w1/*    10        Permanent: calendar not found",
    ]


# ---------------------------------------------------------------------------------------------
# The executable


async def test_enqueue_writes_each_operation_and_prints_its_id(
    pool: PgPool, account: Account, env: dict[str, str]
) -> None:
    target = ("--account", str(account.id))
    results = await asyncio.gather(
        outbox(
            env,
            "enqueue",
            *target,
            *SOURCE_ARGS,
            "--version=2",
            "--title=Review",
            "--description=notes",
            "--start=2026-03-02T09:30:00+01:00",
            "--end=2026-03-02T10:30:00+01:00",
        ),
        outbox(env, "enqueue", *target, "--rebuild", "--workspace=w1", "--calendar=team"),
    )
    for code, _, err in results:
        assert (code, err) == (0, "")
    ids = [int(out) for _, out, _ in results]
    # The other operations through the same code, without a process each.
    account_arg = ("--account", str(account.id))
    for argv in (
        ("--cancel", *SOURCE_ARGS, "--version=3"),
        (
            *SOURCE_ARGS,
            "--version=1",
            "--title=Day",
            "--all-day",
            "--start-date=2026-03-05",
            "--end-date=2026-03-06",
        ),
    ):
        ids.append(await enqueue(pool, enqueue_command(parse("enqueue", *account_arg, *argv))))
    items = {i.id: i for i in await store.due_items(pool, account.id, now=FAR, limit=10)}
    assert sorted(items) == sorted(ids)
    timed, rebuild, cancel, all_day = (items[i] for i in ids)
    source = SourceKey("w1", "task", "t-1", "BLOCKER_DEADLINE")
    assert (timed.source, timed.version, timed.content) == (
        source,
        2,
        EventContent(
            title="Review",
            timing=EventTiming(
                all_day=False,
                start_at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC),
                end_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
            ),
            description="notes",
        ),
    )
    assert all_day.content is not None
    assert all_day.content.timing.all_day
    assert (cancel.operation, cancel.source, cancel.version) == (
        Operation.CANCEL_EVENT,
        source,
        3,
    )
    assert (rebuild.operation, rebuild.calendar_id) == (Operation.REBUILD_ALL, "team")


async def test_refused_enqueues_write_nothing(
    pool: PgPool, account: Account, env: dict[str, str]
) -> None:
    (bad_code, bad_out, bad_err), (unknown_code, unknown_out, unknown_err) = await asyncio.gather(
        outbox(
            env,
            "enqueue",
            "--account",
            str(account.id),
            *SOURCE_ARGS,
            "--version=1",
            "--title=x",
            "--start=2026-03-02T09:00:00",
            "--end=2026-03-02T10:00:00",
        ),
        outbox(env, "enqueue", "--account", ACCOUNT, "--rebuild", "--workspace=w1"),
    )
    assert (bad_code, bad_out) == (USAGE, "")
    assert bad_err.strip().splitlines() == [
        "--start: '2026-03-02T09:00:00' has no UTC offset (e.g. 2026-03-02T09:30:00+01:00)"
    ]
    assert (unknown_code, unknown_out) == (1, "")
    assert unknown_err.strip().splitlines() == [f"no account '{ACCOUNT}'"]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def _dead_letters(pool: PgPool, account: Account, count: int) -> list[int]:
    ids = []
    for n in range(count):
        item = await store.enqueue_cancel(
            pool,
            account.id,
            SourceKey("w1", "task", f"t{n}", "BLOCKER_DEADLINE"),
            "primary",
            version=1,
        )
        await store.dead_letter(pool, item, attempts=10, error=f"Permanent: refused {n}")
        ids.append(item)
    return ids


async def test_status_and_dead_letters(pool: PgPool, account: Account, env: dict[str, str]) -> None:
    letters = await _dead_letters(pool, account, 3)
    pending = await store.enqueue_rebuild(pool, account.id, "w1", "primary")
    await pool.execute(
        "UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id = $1", pending
    )
    status, status_js, table, page = await asyncio.gather(
        outbox(env, "status"),
        outbox(env, "status", "--json", "--account", str(account.id)),
        outbox(env, "dead-letters"),
        outbox(env, "dead-letters", "--json", "--limit=1", f"--after={letters[0]}"),
    )
    for code, _, err in (status, status_js, table, page):
        assert (code, err) == (0, "")
    lines = status[1].splitlines()
    assert lines[:4] == ["pending      1", "done         0", "skipped      0", "dead_letter  3"]
    assert lines[4].startswith("oldest pending: 2h ")
    report: dict[str, Any] = orjson.loads(status_js[1])
    assert report["counts"] == {"pending": 1, "done": 0, "skipped": 0, "dead_letter": 3}
    assert 7200 <= report["oldest_pending_age_s"] < 7300
    rows = table[1].splitlines()
    assert rows[0].split() == ["ID", "ACCOUNT", "OPERATION", "SOURCE", "ATTEMPTS", "LAST", "ERROR"]
    assert rows[1].split() == [
        str(letters[0]),
        str(account.id),
        "CANCEL_EVENT",
        "w1/task/t0/BLOCKER_DEADLINE",
        "10",
        "Permanent:",
        "refused",
        "0",
    ]
    assert len(rows) == 4
    second_page = [orjson.loads(line) for line in page[1].splitlines()]
    assert [row["id"] for row in second_page] == letters[1:2]
    assert second_page[0] == {
        "id": letters[1],
        "account": str(account.id),
        "operation": "CANCEL_EVENT",
        "workspace_id": "w1",
        "calendar_id": "primary",
        "source_type": "task",
        "source_id": "t1",
        "event_type": "BLOCKER_DEADLINE",
        "version": 1,
        "attempts": 10,
        "last_error": "Permanent: refused 1",
        "created_at": second_page[0]["created_at"],
    }


async def test_replay_is_all_or_nothing(
    pool: PgPool, account: Account, env: dict[str, str]
) -> None:
    a, b, c = await _dead_letters(pool, account, 3)
    pending = await store.enqueue_rebuild(pool, account.id, "w1", "primary")
    code, out, err = await outbox(env, "replay", str(a), str(pending), "999999")
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [
        f"not dead letters, nothing replayed: {pending} (pending), 999999 (no such item)"
    ]
    assert (await store.status(pool)).counts[ItemState.DEAD_LETTER] == 3

    (one_code, one_out, _), (both_code, _, both_err) = await asyncio.gather(
        outbox(env, "replay", str(a)),
        outbox(env, "replay", str(b), "--all"),
    )
    assert (one_code, one_out.strip()) == (0, "dead letters replayed: 1")
    assert (both_code, both_err.strip()) == (USAGE, "give item ids or --all, not both")
    code, out, _ = await outbox(env, "replay", "--all", "--account", str(account.id))
    assert (code, out.strip()) == (0, "dead letters replayed: 2")
    replayed = await store.due_items(pool, account.id, now=FAR, limit=10)
    assert {i.id for i in replayed} == {a, b, c, pending}
    assert all(i.attempts == 0 for i in replayed)
