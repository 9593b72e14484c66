"""Operator commands: ``accounts add|list|show|disable|remove`` and ``events export``.

Invariants:
- Token values never reach argv, stdout or stderr: ``accounts add`` reads the refresh token from
  a file or stdin (never a flag), registers it with the log redactor at once, and stores it only
  encrypted; ``accounts show`` prints credential metadata (key id, expiry, scopes) only, and
  push channels without their token hashes; no message names a token.
- stdout carries only data (ids, tables, JSON); every refusal or error is one line on stderr.
- Exit codes: 0 success; 1 unknown account, refused removal, unreadable or empty token input,
  unmigrated database; 2 invalid configuration (e.g. no encryption key for ``accounts add``).
  Commands raise ``OperatorError``/``ConfigError``; the CLI's ``main`` prints the one line and
  exits with the code once everything the command opened was released.
- The command layer is thin: the use cases (``operations.accounts``: ``add_account``,
  ``account_details``, ``export_rows``, ``remove_account``) take a pool and raise
  ``OperatorError``, so tests call them directly.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import asyncpg
import orjson
from redis.asyncio import Redis

from config.redact import register_secret
from config.settings import Settings
from operations.accounts import (
    DISABLED_BY_OPERATOR,
    OperatorError,
    account_details,
    account_json,
    add_account,
    export_rows,
    parse_account_id,
    remove_account,
)
from operations.calendars import calendars_json, choose_calendar
from operations.set_aside import retry_set_aside
from store.accounts import Account, list_accounts, set_status
from store.crypto import Keyring
from store.db import PgPool, create_pool
from store.vocabulary import Provider, Status
from supervisor.services import open_services

Command = Callable[[Settings, argparse.Namespace], Awaitable[None]]

LAST_ERROR_WIDTH = 60


# ---------------------------------------------------------------------------------------------
# Pure helpers


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def accounts_table(accounts: Sequence[Account]) -> str:
    """A fixed-width table: id, provider, email, shard, status, last error (one line, cut)."""
    header = ("ID", "PROVIDER", "EMAIL", "SHARD", "STATUS", "LAST ERROR")
    rows = [header] + [
        (
            str(a.id),
            a.provider,
            a.external_user_id,
            str(a.shard),
            a.status,
            _one_line(a.last_error, LAST_ERROR_WIDTH),
        )
        for a in accounts
    ]
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first a header) as fixed-width columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def details_text(details: dict[str, Any]) -> str:
    """``accounts show`` for people: one ``key: value`` line per field, lists indented."""
    lines = [f"{key}: {'-' if details[key] is None else details[key]}" for key in _ACCOUNT_KEYS]
    creds = details["credentials"]
    if creds is None:
        lines.append("credentials: none")
    else:
        lines.append("credentials:")
        for key, value in creds.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            lines.append(f"  {key}: {'-' if shown in (None, '') else shown}")
    lines.append(f"events: {details['events']}")
    lines.append(f"calendars: {len(details['calendars'])}")
    for cal in details["calendars"]:
        lines.append(
            f"  {cal['id']}  name={cal['name']!r} primary={cal['primary']}"
            f" sync_enabled={cal['sync_enabled']} delta_token={cal['has_delta_token']}"
            f" mid_round={cal['mid_round']} last_synced_at={cal['last_synced_at'] or '-'}"
            f" removed_at={cal['removed_at'] or '-'} events={cal['events']}"
            f" set_aside={cal['set_aside']}"
            + ("" if cal["watchable"] else " polled (cannot be watched)")
        )
    if details["set_aside"]:
        lines.append("set_aside (oldest first; `accounts retry-set-aside` asks for a full round):")
        for item in details["set_aside"]:
            lines.append(
                f"  {item['calendar_id']}:{item['item_id']}  {item['reason']}"
                f" attempts={item['attempts']} since={item['first_seen']}"
            )
    lines.append(f"push_channels: {len(details['push_channels'])}")
    for channel in details["push_channels"]:
        lines.append(
            f"  {channel['provider']}:{channel['id']}  calendar={channel['calendar_id']}"
            f" expires_at={channel['expires_at'] or '-'}"
        )
    return "\n".join(lines)


_ACCOUNT_KEYS = (
    "id",
    "provider",
    "email",
    "shard",
    "status",
    "last_error",
    "created_at",
    "updated_at",
)


# ---------------------------------------------------------------------------------------------
# Database operations (take a pool, raise OperatorError)


# ---------------------------------------------------------------------------------------------
# Command layer


def read_refresh_token(source: str) -> str:
    """The refresh token from file ``source`` or stdin (``-``), stripped and registered secret."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise OperatorError(f"cannot read refresh token file {source!r}: {reason}") from None
    token = text.strip()
    if not token:
        where = "stdin" if source == "-" else f"file {source!r}"
        raise OperatorError(f"no refresh token in {where}")
    register_secret(token)
    return token


@contextlib.asynccontextmanager
async def _open_pool(settings: Settings) -> AsyncIterator[PgPool]:
    async with open_services(settings) as urls:
        pool = await create_pool(urls.database_url, settings.db_schema, min_size=1, max_size=2)
        try:
            yield pool
        except asyncpg.UndefinedTableError:
            raise OperatorError(
                "the database is not migrated: run `integration-worker migrate` first"
            ) from None
        finally:
            await pool.close()


def _print_json_lines(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        sys.stdout.write(orjson.dumps(row).decode() + "\n")


async def _accounts_add(settings: Settings, args: argparse.Namespace) -> None:
    active, keys = settings.keyring_material()  # ConfigError (exit 2) before anything else
    keyring = Keyring(active, keys)
    email = args.email.strip()
    if not email:
        raise OperatorError("--email must not be empty")
    source: str = args.refresh_token_file
    token = await anyio.to_thread.run_sync(read_refresh_token, source)
    async with _open_pool(settings) as pool:
        account = await add_account(
            pool,
            keyring,
            provider=cast(Provider, args.provider),
            email=email,
            refresh_token=token,
            shard_count=settings.shard_count,
        )
    print(account.id)


async def _accounts_list(settings: Settings, args: argparse.Namespace) -> None:
    statuses: list[Status] | None = None if args.status is None else [args.status]
    async with _open_pool(settings) as pool:
        accounts = await list_accounts(pool, statuses=statuses)
    if args.provider is not None:
        accounts = [a for a in accounts if a.provider == args.provider]
    if args.json:
        _print_json_lines([account_json(a) for a in accounts])
    else:
        print(accounts_table(accounts))


async def _accounts_show(settings: Settings, args: argparse.Namespace) -> None:
    account_id = parse_account_id(args.account_id)
    async with _open_pool(settings) as pool:
        details = await account_details(pool, account_id)
    print(orjson.dumps(details).decode() if args.json else details_text(details))


async def _accounts_calendars(settings: Settings, args: argparse.Namespace) -> None:
    account_id = parse_account_id(args.account_id)
    chosen: tuple[str, bool | None] | None = None
    if args.select is not None:
        chosen = (args.select, True)
    elif args.deselect is not None:
        chosen = (args.deselect, False)
    elif args.default is not None:
        chosen = (args.default, None)
    async with open_services(settings) as urls:
        pool = await create_pool(urls.database_url, settings.db_schema, min_size=1, max_size=2)
        redis = Redis.from_url(urls.redis_url)
        try:
            if chosen is not None:
                await choose_calendar(
                    pool, redis, account_id, chosen[0], chosen[1], now=datetime.now(UTC)
                )
            rows = await calendars_json(pool, account_id)
        finally:
            await redis.aclose()
            await pool.close()
    if args.json:
        _print_json_lines(rows)
        return
    table = [("ID", "NAME", "SELECTED", "CHOICE", "ROLE", "WATCHABLE")]
    for row in rows:
        choice = "default" if row["choice"] is None else ("yes" if row["choice"] else "no")
        table.append(
            (
                row["id"],
                row["name"],
                "yes" if row["selected"] else "no",
                choice,
                row["access_role"] or "-",
                "yes" if row["watchable"] else "no (polled)",
            )
        )
    print(_table(table))


async def _accounts_retry_set_aside(settings: Settings, args: argparse.Namespace) -> None:
    account_id = parse_account_id(args.account_id)
    async with open_services(settings) as urls:
        pool = await create_pool(urls.database_url, settings.db_schema, min_size=1, max_size=2)
        redis = Redis.from_url(urls.redis_url)
        try:
            calendars, _ = await retry_set_aside(pool, redis, account_id, now=datetime.now(UTC))
        finally:
            await redis.aclose()
            await pool.close()
    for calendar_id in calendars:
        print(calendar_id)


async def _accounts_disable(settings: Settings, args: argparse.Namespace) -> None:
    account_id = parse_account_id(args.account_id)
    async with _open_pool(settings) as pool:
        account = await set_status(pool, account_id, "disabled", last_error=DISABLED_BY_OPERATOR)
    if account is None:
        raise OperatorError(f"no account {args.account_id!r}")
    print(account.id)


async def _accounts_remove(settings: Settings, args: argparse.Namespace) -> None:
    account_id = parse_account_id(args.account_id)
    async with _open_pool(settings) as pool:
        account = await remove_account(pool, account_id, confirmed=args.yes)
    print(account.id)


async def _events_export(settings: Settings, args: argparse.Namespace) -> None:
    account_id = parse_account_id(args.account)
    async with _open_pool(settings) as pool:
        rows = await export_rows(pool, account_id)
    _print_json_lines(rows)
