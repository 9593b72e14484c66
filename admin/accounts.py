"""Account handlers: connect, list, get, disable, enable, delete, sync now, preferences.

Invariants:
- a refresh token is registered with the log redactor on arrival and stored only encrypted
  (``add_account``); no response carries it;
- a purge happens only with ``?purge=true``, like ``accounts remove --yes``;
- "sync now" appends a ``sync-now`` entry to the account's shard stream (docs/streams.md), the
  same path a provider notification takes, so whichever replica owns the shard runs it; saved
  preferences append a ``preferences`` entry the same way, after their commit, so the running
  actor reloads them.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast
from uuid import UUID

from actors.account.messages import PreferencesChanged, SyncNow
from admin.context import Call, Deps
from admin.cursor import CursorError, decode_accounts, encode_accounts
from admin.errors import ApiError, not_found
from admin.models import (
    AccountOut,
    AccountPage,
    AccountPath,
    AccountsQuery,
    CalendarChoice,
    CalendarList,
    CalendarOut,
    CalendarPath,
    ConnectAccount,
    DeleteQuery,
    PreferencesIn,
    PreferencesOut,
    RetryAccepted,
    SetAsideItem,
    SetAsideList,
    SyncAccepted,
)
from cluster.streams import StreamEntry, append, request_entry
from config.redact import register_secret
from operations.accounts import (
    DISABLED_BY_OPERATOR,
    OperatorError,
    UnknownAccountKind,
    add_account,
    remove_account,
    set_aside_json,
)
from operations.calendars import calendars_json, choose_calendar
from operations.set_aside import retry_set_aside
from store.accounts import Account, get_account, set_status
from store.db import Queryable, transaction
from store.preferences import (
    Preferences,
    default_preferences,
    load_preferences,
    save_preferences,
)
from store.vocabulary import Provider, Status

SYNC_NOW_KIND = SyncNow.stream_kind  # routed to the actor as a sync of every calendar
PREFERENCES_KIND = PreferencesChanged.stream_kind  # the actor reloads its preferences

_COLUMNS = "id, provider, external_user_id, shard, status, last_error, created_at, updated_at"


def account_out(account: Account) -> AccountOut:
    """The API's view of an account."""
    return AccountOut(
        id=account.id,
        provider=account.provider,
        email=account.external_user_id,
        shard=account.shard,
        status=account.status,
        last_error=account.last_error,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


def account_entry(account: Account, kind: str, requested_at: datetime) -> StreamEntry:
    """The stream entry asking the account's actor for ``kind`` (no calendar, no channel)."""
    return request_entry(account.shard, account.provider, account.id, kind, requested_at)


async def _existing(conn: Queryable, account_id: UUID) -> Account:
    account = await get_account(conn, account_id)
    if account is None:
        raise not_found("account")
    return account


async def page_accounts(
    conn: Queryable,
    *,
    limit: int,
    cursor: str | None,
    status: Status | None,
    provider: Provider | None,
) -> tuple[list[Account], str | None]:
    """One page of accounts by (created_at, id), and the cursor of the next page."""
    after = None
    if cursor is not None:
        try:
            after = decode_accounts(cursor)
        except CursorError:
            raise ApiError(422, "invalid_cursor", "the cursor is not valid here") from None
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM accounts WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR provider = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))"
        " ORDER BY created_at, id LIMIT $5",
        status,
        provider,
        None if after is None else after[0],
        None if after is None else after[1],
        limit + 1,
    )
    accounts = [
        Account(
            id=r["id"],
            provider=cast(Provider, r["provider"]),
            external_user_id=r["external_user_id"],
            shard=r["shard"],
            status=cast(Status, r["status"]),
            last_error=r["last_error"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    last = accounts[-1] if accounts else None
    next_cursor = encode_accounts(last.created_at, last.id) if more and last else None
    return accounts, next_cursor


async def connect_account(deps: Deps, call: Call) -> AccountOut:
    """``POST /accounts``."""
    body = call.body_as(ConnectAccount)
    token = body.refresh_token.get_secret_value()
    register_secret(token)
    try:
        account = await add_account(
            deps.pool,
            deps.keyring,
            provider=body.provider,
            email=body.email,
            refresh_token=token,
            shard_count=deps.settings.shard_count,
        )
    except UnknownAccountKind as error:
        raise ApiError(422, "invalid_request", str(error)) from None
    return account_out(account)


async def list_accounts(deps: Deps, call: Call) -> AccountPage:
    """``GET /accounts``."""
    query = call.query_as(AccountsQuery)
    accounts, next_cursor = await page_accounts(
        deps.pool,
        limit=query.limit,
        cursor=query.cursor,
        status=query.status,
        provider=query.provider,
    )
    return AccountPage(items=[account_out(a) for a in accounts], next_cursor=next_cursor)


async def get_one(deps: Deps, call: Call) -> AccountOut:
    """``GET /accounts/{account_id}``."""
    return account_out(await _existing(deps.pool, call.path_as(AccountPath).account_id))


async def disable_account(deps: Deps, call: Call) -> AccountOut:
    """``POST /accounts/{account_id}/disable``."""
    account_id = call.path_as(AccountPath).account_id
    account = await set_status(deps.pool, account_id, "disabled", last_error=DISABLED_BY_OPERATOR)
    if account is None:
        raise not_found("account")
    return account_out(account)


async def enable_account(deps: Deps, call: Call) -> AccountOut:
    """``POST /accounts/{account_id}/enable``: only a disabled account (others need more)."""
    account_id = call.path_as(AccountPath).account_id
    async with transaction(deps.pool) as conn:
        account = await _existing(conn, account_id)
        if account.status == "active":
            return account_out(account)
        if account.status != "disabled":
            raise ApiError(
                409,
                "not_disabled",
                f"the account is {account.status}: connect it again with new credentials",
            )
        enabled = await set_status(conn, account_id, "active", last_error=None)
    if enabled is None:  # pragma: no cover - deleted inside one transaction
        raise not_found("account")
    return account_out(enabled)


async def delete_account(deps: Deps, call: Call) -> None:
    """``DELETE /accounts/{account_id}?purge=true``."""
    account_id = call.path_as(AccountPath).account_id
    await _existing(deps.pool, account_id)
    if not call.query_as(DeleteQuery).purge:
        raise ApiError(
            409,
            "purge_required",
            "deleting purges the account's credentials, calendars, events, push channels and"
            " change-feed rows; ask again with ?purge=true",
        )
    try:
        await remove_account(deps.pool, account_id, confirmed=True)
    except OperatorError:  # removed concurrently
        raise not_found("account") from None


async def sync_account(deps: Deps, call: Call) -> SyncAccepted:
    """``POST /accounts/{account_id}/sync``: 202 once the request is in the shard stream."""
    account = await _existing(deps.pool, call.path_as(AccountPath).account_id)
    if account.status != "active":
        raise ApiError(409, "not_active", f"the account is {account.status}, not active")
    (entry_id,) = await _announce(deps, account, SYNC_NOW_KIND)
    return SyncAccepted(account_id=account.id, entry_id=entry_id)


async def _announce(deps: Deps, account: Account, kind: str) -> list[str]:
    return await append(deps.redis, [account_entry(account, kind, deps.clock())])


def _preferences_out(account_id: UUID, prefs: Preferences, *, stored: bool) -> PreferencesOut:
    return PreferencesOut(
        account_id=account_id,
        stored=stored,
        auto_sync=prefs.auto_sync,
        sync_frequency_minutes=prefs.sync_frequency_minutes,
        sync_window_back_days=prefs.sync_window_back_days,
        sync_window_ahead_days=prefs.sync_window_ahead_days,
    )


async def get_preferences(deps: Deps, call: Call) -> PreferencesOut:
    """``GET /accounts/{account_id}/preferences``: stored, or the defaults."""
    account = await _existing(deps.pool, call.path_as(AccountPath).account_id)
    stored = (await load_preferences(deps.pool, [account.id])).get(account.id)
    if stored is None:
        return _preferences_out(
            account.id, default_preferences(deps.settings.sync_poll_s), stored=False
        )
    return _preferences_out(account.id, stored, stored=True)


async def put_preferences(deps: Deps, call: Call) -> PreferencesOut:
    """``PUT /accounts/{account_id}/preferences``: replaces them all, then tells the actor."""
    account = await _existing(deps.pool, call.path_as(AccountPath).account_id)
    body = call.body_as(PreferencesIn)
    prefs = Preferences(
        auto_sync=body.auto_sync,
        sync_frequency_minutes=body.sync_frequency_minutes,
        sync_window_back_days=body.sync_window_back_days,
        sync_window_ahead_days=body.sync_window_ahead_days,
    )
    if not await save_preferences(deps.pool, account.id, prefs):
        raise not_found("account")
    # After the commit, so the actor reads them; if Redis fails the client retries the PUT.
    await _announce(deps, account, PREFERENCES_KIND)
    return _preferences_out(account.id, prefs, stored=True)


SET_ASIDE_LISTED = 200  # items set aside in one answer of GET /accounts/{id}/set-aside


async def list_set_aside(deps: Deps, call: Call) -> SetAsideList:
    """``GET /accounts/{account_id}/set-aside``."""
    account = await _existing(deps.pool, call.path_as(AccountPath).account_id)
    rows = await set_aside_json(deps.pool, account.id, limit=SET_ASIDE_LISTED)
    return SetAsideList(items=[SetAsideItem.model_validate(row) for row in rows])


async def retry_set_aside_items(deps: Deps, call: Call) -> RetryAccepted:
    """``POST /accounts/{account_id}/set-aside/retry``: 202 once the requests are in the
    account's shard stream."""
    account = await _existing(deps.pool, call.path_as(AccountPath).account_id)
    if account.status != "active":
        raise ApiError(409, "not_active", f"the account is {account.status}, not active")
    calendars, entry_ids = await retry_set_aside(
        deps.pool, deps.redis, account.id, now=deps.clock()
    )
    return RetryAccepted(account_id=account.id, calendars=calendars, entry_ids=entry_ids)


async def list_calendars(deps: Deps, call: Call) -> CalendarList:
    """``GET /accounts/{account_id}/calendars``."""
    account = await _existing(deps.pool, call.path_as(AccountPath).account_id)
    rows = await calendars_json(deps.pool, account.id)
    return CalendarList(items=[CalendarOut.model_validate(row) for row in rows])


async def choose(deps: Deps, call: Call) -> CalendarOut:
    """``PUT /accounts/{account_id}/calendars/{calendar_id}``: recorded, and the account's
    actor asked to act on it (a deselected calendar's events go, a selected one syncs)."""
    path = call.path_as(CalendarPath)
    await _existing(deps.pool, path.account_id)
    choice = call.body_as(CalendarChoice)
    try:
        row = await choose_calendar(
            deps.pool,
            deps.redis,
            path.account_id,
            path.calendar_id,
            choice.selected,
            now=deps.clock(),
        )
    except OperatorError:
        raise not_found("calendar") from None
    return CalendarOut.model_validate(row)
