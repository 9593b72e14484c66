"""The route table: every operation of ``/api/v1``. The router is built from it and the
OpenAPI document is generated from it, so the two list exactly the same operations."""

from __future__ import annotations

from functools import cache
from typing import Any

from admin import accounts, outbox, shards
from admin.context import Call, Deps, Route
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
    DeadLetterPage,
    DeadLettersQuery,
    DeleteQuery,
    Enqueued,
    EnqueueRequest,
    ItemPath,
    OpenApiDocument,
    OutboxStatusOut,
    OutboxStatusQuery,
    PreferencesIn,
    PreferencesOut,
    Replayed,
    RetryAccepted,
    SetAsideList,
    ShardsOverview,
    SyncAccepted,
)
from admin.openapi import openapi_document

PREFIX = "/api/v1"
OPENAPI_PATH = "/openapi.json"
TITLE = "integration-worker admin API"
VERSION = "1"


async def get_openapi(_deps: Deps, _call: Call) -> OpenApiDocument:
    """``GET /openapi.json``: this API's OpenAPI document (public)."""
    return OpenApiDocument(document())


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        OPENAPI_PATH,
        get_openapi,
        "The OpenAPI 3.1 document of this API",
        "meta",
        response=OpenApiDocument,
        public=True,
    ),
    Route(
        "POST",
        "/accounts",
        accounts.connect_account,
        "Connect an account (or give it new credentials and re-activate it)",
        "accounts",
        status=201,
        response=AccountOut,
        body=ConnectAccount,
    ),
    Route(
        "GET",
        "/accounts",
        accounts.list_accounts,
        "List accounts, oldest first, by status and provider",
        "accounts",
        response=AccountPage,
        query=AccountsQuery,
    ),
    Route(
        "GET",
        "/accounts/{account_id}",
        accounts.get_one,
        "One account",
        "accounts",
        response=AccountOut,
        path_params=AccountPath,
    ),
    Route(
        "DELETE",
        "/accounts/{account_id}",
        accounts.delete_account,
        "Purge an account and all its data (requires purge=true)",
        "accounts",
        status=204,
        path_params=AccountPath,
        query=DeleteQuery,
        refusals=(409,),
    ),
    Route(
        "POST",
        "/accounts/{account_id}/disable",
        accounts.disable_account,
        "Stop syncing an account",
        "accounts",
        response=AccountOut,
        path_params=AccountPath,
    ),
    Route(
        "POST",
        "/accounts/{account_id}/enable",
        accounts.enable_account,
        "Resume syncing a disabled account",
        "accounts",
        response=AccountOut,
        path_params=AccountPath,
        refusals=(409,),
    ),
    Route(
        "POST",
        "/accounts/{account_id}/sync",
        accounts.sync_account,
        "Ask the account's actor to sync every calendar now",
        "accounts",
        status=202,
        response=SyncAccepted,
        path_params=AccountPath,
        refusals=(409,),
    ),
    Route(
        "GET",
        "/accounts/{account_id}/calendars",
        accounts.list_calendars,
        "The account's listed calendars and whether each syncs",
        "calendars",
        response=CalendarList,
        path_params=AccountPath,
    ),
    Route(
        "PUT",
        "/accounts/{account_id}/calendars/{calendar_id}",
        accounts.choose,
        "Select or deselect a calendar (null: the default rule)",
        "calendars",
        response=CalendarOut,
        path_params=CalendarPath,
        body=CalendarChoice,
    ),
    Route(
        "GET",
        "/accounts/{account_id}/set-aside",
        accounts.list_set_aside,
        "Items a sync could not read or store, set aside while their calendar went on",
        "accounts",
        response=SetAsideList,
        path_params=AccountPath,
    ),
    Route(
        "POST",
        "/accounts/{account_id}/set-aside/retry",
        accounts.retry_set_aside_items,
        "Ask for a full round of each calendar holding items set aside",
        "accounts",
        status=202,
        response=RetryAccepted,
        path_params=AccountPath,
        refusals=(409,),
    ),
    Route(
        "GET",
        "/accounts/{account_id}/preferences",
        accounts.get_preferences,
        "The account's sync preferences (the defaults until set)",
        "preferences",
        response=PreferencesOut,
        path_params=AccountPath,
    ),
    Route(
        "PUT",
        "/accounts/{account_id}/preferences",
        accounts.put_preferences,
        "Replace the account's sync preferences",
        "preferences",
        response=PreferencesOut,
        path_params=AccountPath,
        body=PreferencesIn,
    ),
    Route(
        "POST",
        "/outbox",
        outbox.enqueue,
        "Queue an outbox request (UPSERT_EVENT, CANCEL_EVENT, REBUILD_ALL)",
        "outbox",
        status=202,
        response=Enqueued,
        body=EnqueueRequest,
        refusals=(404,),
    ),
    Route(
        "GET",
        "/outbox/status",
        outbox.outbox_status,
        "Outbox items by state and the oldest pending one",
        "outbox",
        response=OutboxStatusOut,
        query=OutboxStatusQuery,
    ),
    Route(
        "GET",
        "/outbox/dead-letters",
        outbox.list_dead_letters,
        "List dead letters, lowest id first",
        "outbox",
        response=DeadLetterPage,
        query=DeadLettersQuery,
    ),
    Route(
        "POST",
        "/outbox/dead-letters/{item_id}/replay",
        outbox.replay_dead_letter,
        "Put a dead letter back to pending, due now",
        "outbox",
        response=Replayed,
        path_params=ItemPath,
        refusals=(409,),
    ),
    Route(
        "GET",
        "/shards",
        shards.shards_overview,
        "Every shard's lease holder, epoch and accounts, and the live replicas",
        "shards",
        response=ShardsOverview,
    ),
)


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document of ``ROUTES`` (built once per process)."""
    return openapi_document(ROUTES, prefix=PREFIX, title=TITLE, version=VERSION)


def public_paths() -> frozenset[str]:
    """The full paths served without a token."""
    return frozenset(PREFIX + route.path for route in ROUTES if route.public)
