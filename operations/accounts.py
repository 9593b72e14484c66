"""Account use cases shared by the CLI, the admin API and the connect flow: connect (add), look
up, describe, export and remove an account.

Invariants:
- every function takes a pool and raises ``OperatorError`` for a refusal or an unknown account,
  with the exit code the CLI uses; the callers render it (one stderr line, a JSON error);
- nothing here reads or prints a token: ``add_account`` stores the refresh token encrypted, and
  ``account_details`` reports credential metadata only (key id, expiry, scopes);
- ``remove_account`` purges only when ``confirmed``: an account's data is not removed by accident.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from store.accounts import (
    Account,
    bind_subject,
    create_account,
    delete_account,
    find_account,
    find_account_by_subject,
    get_account,
    known_kinds,
    set_status,
)
from store.calendars import list_calendar_states
from store.channels import list_channels
from store.credentials import Credentials, credential_info, store_credentials
from store.crypto import Keyring
from store.db import PgPool, transaction
from store.events import export_events
from store.set_aside import list_set_aside
from store.vocabulary import Provider

DISABLED_BY_OPERATOR = "disabled by operator"
SHOWN_SET_ASIDE = 20  # items set aside listed by ``accounts show`` (the calendars count all)


class OperatorError(Exception):
    """A refusal or failure to report as one line on stderr, with the process's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_account_id(text: str) -> UUID:
    """The account id in ``text``; an unparsable id is an unknown account."""
    try:
        return UUID(text)
    except ValueError:
        raise OperatorError(f"no account {text!r}") from None


def iso_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def account_json(account: Account) -> dict[str, Any]:
    """An account as a JSON-ready mapping (``email`` is the external user id)."""
    return {
        "id": str(account.id),
        "provider": account.provider,
        "email": account.external_user_id,
        "shard": account.shard,
        "status": account.status,
        "last_error": account.last_error,
        "created_at": iso_time(account.created_at),
        "updated_at": iso_time(account.updated_at),
    }


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


class AccountOfAnotherUser(OperatorError):
    """The e-mail names an account bound to another subject: it is never taken over."""


class UnknownAccountKind(OperatorError):
    """The account names a kind that is not registered (not in ``account_kinds``)."""


async def add_account(
    pool: PgPool,
    keyring: Keyring,
    *,
    provider: Provider,
    email: str,
    refresh_token: str,
    shard_count: int,
    subject: str | None = None,
) -> Account:
    """Create or find the account, store its credentials encrypted, and make it active.

    New credentials re-activate an account in any other status (``needs_reauth`` after the
    user re-authorized, or one an operator disabled): adding them is the operator's decision.
    """
    kinds = await known_kinds(pool)
    if provider not in kinds:
        raise UnknownAccountKind(f"unknown account kind {provider!r}; known: {', '.join(kinds)}")
    async with transaction(pool) as conn:
        account = (
            None if subject is None else await find_account_by_subject(conn, provider, subject)
        )
        if account is None:
            account = await find_account(conn, provider, email)
            if account is not None and subject is not None:
                if account.subject not in (None, subject):
                    # The same e-mail, another user (a reassigned address, a renamed UPN):
                    # their account and credentials stay theirs.
                    raise AccountOfAnotherUser(
                        f"{provider} account {email!r} belongs to another user"
                    )
                if account.subject is None:
                    await bind_subject(conn, account.id, subject)  # adopted: the same user
        if account is None:
            account = await create_account(
                conn, provider=provider, external_user_id=email, shard_count=shard_count
            )
            if subject is not None:
                await bind_subject(conn, account.id, subject)
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
            "access_token_expires_at": iso_time(cred.access_token_expires_at),
            "scopes": list(cred.scopes),
            "updated_at": iso_time(cred.updated_at),
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
            "last_synced_at": iso_time(c.last_synced_at),
            "removed_at": iso_time(c.removed_at),
            "events": counts.get(c.id, 0),
            "set_aside": c.set_aside,
            "watchable": c.push_refused_at is None,  # False: its provider refuses a channel
        }
        for c in calendars
    ]
    details["events"] = sum(counts.values())
    details["push_channels"] = [
        {
            "provider": ch.provider,
            "id": ch.id,
            "calendar_id": ch.calendar_id,
            "expires_at": iso_time(ch.expires_at),
        }
        for ch in channels
    ]
    details["set_aside"] = await set_aside_json(pool, account_id, limit=SHOWN_SET_ASIDE)
    return details


async def set_aside_json(pool: PgPool, account_id: UUID, *, limit: int) -> list[dict[str, Any]]:
    """The account's items set aside, oldest first, JSON-ready (never their raw JSON)."""
    return [
        {
            "calendar_id": row.calendar_id,
            "item_id": row.item_id,
            "reason": row.reason,
            "attempts": row.attempts,
            "first_seen": iso_time(row.first_seen),
            "last_seen": iso_time(row.last_seen),
        }
        for row in await list_set_aside(pool, account_id, limit=limit)
    ]


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
