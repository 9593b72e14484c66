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
- The command layer is thin: ``add_account``, ``account_details``, ``export_rows`` and
  ``remove_account`` take a pool and raise ``OperatorError``, so tests call them directly.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import anyio
import asyncpg
import orjson

from config.redact import register_secret
from config.settings import Settings
from store.accounts import (
    PROVIDERS,
    STATUSES,
    Account,
    Provider,
    Status,
    create_account,
    delete_account,
    find_account,
    get_account,
    list_accounts,
    set_status,
)
from store.calendars import list_calendar_states
from store.channels import list_channels
from store.credentials import Credentials, credential_info, store_credentials
from store.crypto import Keyring
from store.db import PgPool, create_pool, transaction
from store.events import export_events
from supervisor.services import open_services

Command = Callable[[Settings, argparse.Namespace], Awaitable[None]]

LAST_ERROR_WIDTH = 60
DISABLED_BY_OPERATOR = "disabled by operator"


class OperatorError(Exception):
    """A refusal or failure to report as one line on stderr, with the process's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# Pure helpers


def parse_account_id(text: str) -> UUID:
    """The account id in ``text``; an unparsable id is an unknown account."""
    try:
        return UUID(text)
    except ValueError:
        raise OperatorError(f"no account {text!r}") from None


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def account_json(account: Account) -> dict[str, Any]:
    """An account as a JSON-ready mapping (``email`` is the external user id)."""
    return {
        "id": str(account.id),
        "provider": account.provider,
        "email": account.external_user_id,
        "shard": account.shard,
        "status": account.status,
        "last_error": account.last_error,
        "created_at": _iso(account.created_at),
        "updated_at": _iso(account.updated_at),
    }


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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def export_line(provider: str, account_id: UUID, row: dict[str, Any]) -> dict[str, Any]:
    """One ``export_events`` row in the export's shape."""
    return {
        "provider": provider,
        "account": str(account_id),
        "calendar_id": row["calendar_id"],
        "event_id": row["id"],
        "status": row["status"],
        "start": row["start"],
        "end": row["end"],
        "all_day": row["all_day"],
        "summary": row["title"],
    }


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


async def add_account(
    pool: PgPool,
    keyring: Keyring,
    *,
    provider: Provider,
    email: str,
    refresh_token: str,
    shard_count: int,
) -> Account:
    """Create or find the account, store its credentials encrypted, and make it active.

    New credentials re-activate an account in any other status (``needs_reauth`` after the
    user re-authorized, or one an operator disabled): adding them is the operator's decision.
    """
    async with transaction(pool) as conn:
        account = await find_account(conn, provider, email)
        if account is None:
            account = await create_account(
                conn, provider=provider, external_user_id=email, shard_count=shard_count
            )
        await store_credentials(conn, keyring, account.id, Credentials(account.id, refresh_token))
        updated = await set_status(conn, account.id, "active", last_error=None)
    if updated is None:  # pragma: no cover - deleted between statements of one transaction
        raise OperatorError(f"account {account.id} was removed concurrently")
    return updated


async def require_account(pool: PgPool, account_id: UUID) -> Account:
    """The account, or OperatorError (exit 1) naming the unknown id."""
    account = await get_account(pool, account_id)
    if account is None:
        raise OperatorError(f"no account {str(account_id)!r}")
    return account


async def account_details(pool: PgPool, account_id: UUID) -> dict[str, Any]:
    """Everything ``accounts show`` prints, JSON-ready; never a token value or hash."""
    account = await require_account(pool, account_id)
    cred = await credential_info(pool, account_id)
    calendars = await list_calendar_states(pool, account_id)
    counts = {
        r["calendar_id"]: int(r["n"])
        for r in await pool.fetch(
            "SELECT calendar_id, count(*) AS n FROM events WHERE account_id = $1"
            " GROUP BY calendar_id",
            account_id,
        )
    }
    channels = await list_channels(pool, account_id)
    details = account_json(account)
    details["credentials"] = (
        None
        if cred is None
        else {
            "key_id": cred.key_id,
            "has_access_token": cred.has_access_token,
            "access_token_expires_at": _iso(cred.access_token_expires_at),
            "scopes": list(cred.scopes),
            "updated_at": _iso(cred.updated_at),
        }
    )
    details["calendars"] = [
        {
            "id": c.id,
            "name": c.name,
            "primary": c.is_primary,
            "sync_enabled": c.sync_enabled,
            "has_delta_token": c.delta_token is not None,
            "mid_round": c.sync_cursor is not None,
            "last_synced_at": _iso(c.last_synced_at),
            "removed_at": _iso(c.removed_at),
            "events": counts.get(c.id, 0),
        }
        for c in calendars
    ]
    details["events"] = sum(counts.values())
    details["push_channels"] = [
        {
            "provider": ch.provider,
            "id": ch.id,
            "calendar_id": ch.calendar_id,
            "expires_at": _iso(ch.expires_at),
        }
        for ch in channels
    ]
    return details


async def export_rows(pool: PgPool, account_id: UUID) -> list[dict[str, Any]]:
    """The account's stored events in the export's shape, by calendar and id."""
    account = await require_account(pool, account_id)
    return [
        export_line(account.provider, account.id, r) for r in await export_events(pool, account_id)
    ]


async def remove_account(pool: PgPool, account_id: UUID, *, confirmed: bool) -> Account:
    """Purge the account and all its data; refuse (OperatorError) unless ``confirmed``."""
    account = await require_account(pool, account_id)
    if not confirmed:
        raise OperatorError(
            f"refusing to remove {account.provider} account {account.id}"
            f" ({account.external_user_id}): this purges its credentials, calendars, events,"
            " push channels and change-feed rows; run again with --yes"
        )
    async with transaction(pool) as conn:
        if not await delete_account(conn, account_id):
            raise OperatorError(f"no account {str(account_id)!r}")
    return account


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


def add_operator_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``accounts`` (add, list, show, disable, remove) and ``events`` (export)."""
    accounts = commands.add_parser("accounts", help="add, inspect, disable or remove accounts")
    sub = accounts.add_subparsers(dest="accounts_command", required=True)

    add = sub.add_parser("add", help="connect an account (or replace its credentials)")
    add.add_argument("--provider", required=True, choices=PROVIDERS)
    add.add_argument("--email", required=True, help="the account's user (external user id)")
    add.add_argument(
        "--refresh-token-file",
        required=True,
        metavar="PATH",
        help="file holding the OAuth refresh token, or - for stdin (never pass it as a flag)",
    )
    add.set_defaults(run=_accounts_add)

    listing = sub.add_parser("list", help="list accounts")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--provider", choices=PROVIDERS, default=None)
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.set_defaults(run=_accounts_list)

    show = sub.add_parser("show", help="an account, its credentials' metadata, calendars")
    show.add_argument("account_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=_accounts_show)

    disable = sub.add_parser("disable", help="stop syncing an account (status disabled)")
    disable.add_argument("account_id", metavar="ID")
    disable.set_defaults(run=_accounts_disable)

    remove = sub.add_parser("remove", help="purge an account and all its data")
    remove.add_argument("account_id", metavar="ID")
    remove.add_argument("--yes", action="store_true", help="confirm the purge")
    remove.set_defaults(run=_accounts_remove)

    events = commands.add_parser("events", help="stored events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    export = events_sub.add_parser("export", help="an account's events as JSON lines")
    export.add_argument("--account", required=True, metavar="ID")
    export.set_defaults(run=_events_export)
