"""Outbox commands: ``outbox enqueue|status|dead-letters|replay``.

Invariants:
- bad input is refused before any service opens: arguments become an ``operations.outbox`` request
  (its checks, the Python API's) or an ``OperatorError``, so a refused command writes nothing;
- ``replay ID...`` replays all of its ids or none: an id that is not a dead letter refuses the
  whole command;
- stdout carries only data (item ids, tables, JSON); every refusal or error is one line on
  stderr. Exit codes: 0 success; 1 unknown account, an id that is not a dead letter, unmigrated
  database; 2 bad input (argparse's own refusals exit 2 as well).
- The command layer is thin: ``enqueue_command``, ``replay_ids`` and the formatters are plain
  functions, so tests call them directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from config.settings import Settings
from operations import outbox as client
from operations.accounts import OperatorError, parse_account_id, require_account
from outbox.model import ItemState, OutboxItem
from store import outbox as store
from store.db import PgPool, transaction
from supervisor.command_line import MAX_PAGE
from supervisor.operator_commands import LAST_ERROR_WIDTH, _one_line, _open_pool

USAGE = 2  # the exit code of bad input, as argparse's

_SOURCE_FLAGS = ("source_type", "source_id", "event_type")
_CONTENT_FLAGS = ("title", "description", "start", "end", "time_zone", "start_date", "end_date")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _usage(message: str) -> OperatorError:
    return OperatorError(message, exit_code=USAGE)


def _given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags among ``names`` the command line set (a store_true flag is unset when False)."""
    values = {name: getattr(args, name) for name in names}
    # Identity, not equality: ``--version 0`` is given although 0 == False.
    return [
        _flag(name) for name, value in values.items() if value is not None and value is not False
    ]


def _datetime(flag: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _usage(f"{flag}: {text!r} is not an ISO 8601 datetime") from None
    if moment.utcoffset() is None:
        raise _usage(f"{flag}: {text!r} has no UTC offset (e.g. 2026-03-02T09:30:00+01:00)")
    return moment


def _date(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _usage(f"{flag}: {text!r} is not an ISO 8601 date (YYYY-MM-DD)") from None


def _account_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise _usage(f"--account: {text!r} is not a UUID") from None


def enqueue_command(args: argparse.Namespace) -> client.Request:
    """The checked request ``outbox enqueue`` asks for; OperatorError (exit 2) when malformed."""
    if args.rebuild:
        extra = _given(args, (*_SOURCE_FLAGS, "version", *_CONTENT_FLAGS, "all_day"))
    elif args.cancel:
        extra = _given(args, (*_CONTENT_FLAGS, "all_day"))
    elif args.all_day:
        extra = _given(args, ("start", "end", "time_zone"))
    else:
        extra = _given(args, ("start_date", "end_date"))
    kind = "--rebuild" if args.rebuild else "--cancel" if args.cancel else "an upsert"
    if args.all_day and not (args.rebuild or args.cancel):
        kind = "an --all-day upsert"
    if extra:
        raise _usage(f"{kind} takes no {', '.join(extra)}")
    needed: tuple[str, ...] = ()
    if not args.rebuild:
        needed = (*_SOURCE_FLAGS, "version")
        if not args.cancel:
            dates = ("start_date", "end_date") if args.all_day else ("start", "end")
            needed = (*needed, "title", *dates)
    missing = [_flag(name) for name in needed if getattr(args, name) is None]
    if missing:
        raise _usage(f"{kind} needs {', '.join(missing)}")
    account = _account_id(args.account)
    try:
        if args.rebuild:
            return client.rebuild_request(
                account, workspace_id=args.workspace, calendar_id=args.calendar
            )
        if args.cancel:
            return client.cancel_request(
                account,
                workspace_id=args.workspace,
                source_type=args.source_type,
                source_id=args.source_id,
                event_type=args.event_type,
                version=args.version,
                calendar_id=args.calendar,
            )
        start: date | datetime
        end: date | datetime
        if args.all_day:
            start = _date("--start-date", args.start_date)
            end = _date("--end-date", args.end_date)
        else:
            start, end = _datetime("--start", args.start), _datetime("--end", args.end)
        return client.upsert_request(
            account,
            workspace_id=args.workspace,
            source_type=args.source_type,
            source_id=args.source_id,
            event_type=args.event_type,
            version=args.version,
            title=args.title,
            start=start,
            end=end,
            description=args.description,
            time_zone=args.time_zone,
            calendar_id=args.calendar,
        )
    except client.OutboxRequestError as error:
        raise _usage(str(error)) from None


async def enqueue(pool: PgPool, request: client.Request) -> int:
    """Insert the request for an existing account; its item id (OperatorError: no account)."""
    await require_account(pool, request.account_id)
    try:
        return await client.submit(pool, request)
    except asyncpg.ForeignKeyViolationError:  # removed since the check above
        raise OperatorError(f"no account {str(request.account_id)!r}") from None


async def replay_ids(pool: PgPool, ids: Sequence[int]) -> int:
    """Replay these dead letters, all or none (OperatorError naming the others); how many."""
    unique = sorted(set(ids))
    async with transaction(pool) as conn:
        refused: list[str] = []
        for item_id in unique:
            item = await store.get_item(conn, item_id)
            if item is None:
                refused.append(f"{item_id} (no such item)")
            elif item.state is not ItemState.DEAD_LETTER:
                refused.append(f"{item_id} ({item.state.value})")
        if refused:
            raise OperatorError(f"not dead letters, nothing replayed: {', '.join(refused)}")
        # Only a replay moves a dead letter, so none changed since the reads above.
        return await store.replay(conn, unique)


# ---------------------------------------------------------------------------------------------
# Formatting (pure)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def age_text(age: timedelta) -> str:
    """A duration for people: ``2d 3h``, ``1h 2m 3s``, ``0s``; coarse beyond a day."""
    seconds = max(0, int(age.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h")] if days else [(hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return " ".join(shown) or "0s"


def status_json(report: store.OutboxStatus) -> dict[str, Any]:
    """``outbox status --json``: counts by state, the oldest pending item's time and age (s)."""
    age = report.oldest_pending_age
    return {
        "counts": {state.value: report.counts.get(state, 0) for state in ItemState},
        "oldest_pending_at": _iso(report.oldest_pending_at),
        "oldest_pending_age_s": None if age is None else age.total_seconds(),
    }


def status_text(report: store.OutboxStatus) -> str:
    """``outbox status`` for people: one line per state, then the oldest pending item."""
    width = max(len(state.value) for state in ItemState)
    lines = [f"{state.value.ljust(width)}  {report.counts.get(state, 0)}" for state in ItemState]
    if report.oldest_pending_age is None:
        lines.append("oldest pending: -")
    else:
        lines.append(
            f"oldest pending: {age_text(report.oldest_pending_age)} ago"
            f" ({_iso(report.oldest_pending_at)})"
        )
    return "\n".join(lines)


def source_text(item: OutboxItem) -> str:
    """What an item is about: ``workspace/type/id/event type``, or ``workspace/*`` for a rebuild."""
    if item.source is None:
        return f"{item.workspace_id}/*"
    s = item.source
    return f"{s.workspace_id}/{s.source_type}/{s.source_id}/{s.event_type}"


def dead_letter_json(item: OutboxItem) -> dict[str, Any]:
    """One dead letter as a JSON-ready mapping."""
    source = item.source
    return {
        "id": item.id,
        "account": str(item.account_id),
        "operation": item.operation.value,
        "workspace_id": item.workspace_id,
        "calendar_id": item.calendar_id,
        "source_type": None if source is None else source.source_type,
        "source_id": None if source is None else source.source_id,
        "event_type": None if source is None else source.event_type,
        "version": item.version,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "created_at": _iso(item.created_at),
    }


def dead_letters_table(items: Sequence[OutboxItem]) -> str:
    """A fixed-width table: id, account, operation, source, attempts, last error (cut)."""
    header = ("ID", "ACCOUNT", "OPERATION", "SOURCE", "ATTEMPTS", "LAST ERROR")
    rows = [header] + [
        (
            str(item.id),
            str(item.account_id),
            item.operation.value,
            source_text(item),
            str(item.attempts),
            _one_line(item.last_error, LAST_ERROR_WIDTH),
        )
        for item in items
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------------------------
# Command layer


async def _known_account(pool: PgPool, text: str | None) -> UUID | None:
    """The ``--account`` filter, None when not given; OperatorError (exit 1) when unknown."""
    if text is None:
        return None
    account = await require_account(pool, parse_account_id(text))
    return account.id


async def _enqueue(settings: Settings, args: argparse.Namespace) -> None:
    request = enqueue_command(args)
    async with _open_pool(settings) as pool:
        item_id = await enqueue(pool, request)
    print(item_id)


async def _status(settings: Settings, args: argparse.Namespace) -> None:
    async with _open_pool(settings) as pool:
        report = await store.status(pool, await _known_account(pool, args.account))
    print(orjson.dumps(status_json(report)).decode() if args.json else status_text(report))


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> None:
    if not 1 <= args.limit <= MAX_PAGE:
        raise _usage(f"--limit must be between 1 and {MAX_PAGE}")
    async with _open_pool(settings) as pool:
        account = await _known_account(pool, args.account)
        items = await store.dead_letters(
            pool, limit=args.limit, after_id=args.after, account_id=account
        )
    if args.json:
        for item in items:
            sys.stdout.write(orjson.dumps(dead_letter_json(item)).decode() + "\n")
    else:
        print(dead_letters_table(items))


async def _replay(settings: Settings, args: argparse.Namespace) -> None:
    if args.all == bool(args.ids):
        raise _usage("give item ids or --all, not both")
    if args.account is not None and not args.all:
        raise _usage("--account goes with --all only")
    async with _open_pool(settings) as pool:
        if args.all:
            count = await store.replay_all(pool, await _known_account(pool, args.account))
        else:
            count = await replay_ids(pool, args.ids)
    print(f"dead letters replayed: {count}")
