"""The admin API's request and response models: the handlers' types and the OpenAPI schemas.

Invariants:
- every bound is the database's (column ranges, CHECKs), so a request that validates never
  fails in SQL for its shape; text rejects NUL, which PostgreSQL cannot store;
- no response model has a field for a secret: tokens are accepted (``SecretStr``), never shown;
- models are closed (``extra="forbid"``), queries too: a misspelt field or parameter is a 422,
  never silently ignored.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SecretStr,
)

from outbox.model import DEFAULT_CALENDAR, MAX_VERSION
from store.preferences import MAX_FREQUENCY_MINUTES, MAX_WINDOW_DAYS, MIN_FREQUENCY_MINUTES
from store.vocabulary import Status

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_BIGINT = 2**63 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _utc_convertible(value: datetime) -> datetime:
    # 0001-01-01T00:00+01:00 is a valid ISO datetime that has no UTC equivalent in Python.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    return value


def _secret_no_nul(value: SecretStr) -> SecretStr:
    _no_nul(value.get_secret_value())
    return value


Text = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_nul)]
LongText = Annotated[str, Field(max_length=100_000), AfterValidator(_no_nul)]
Moment = Annotated[AwareDatetime, AfterValidator(_utc_convertible)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ------------------------------------------------------------------------------


class FieldProblem(_Model):
    """One invalid input: where (``body.email``, ``query.limit``) and what is wrong."""

    location: str
    message: str


class ErrorDetail(_Model):
    """What went wrong: a stable machine code and a human message (never an input value)."""

    code: str
    message: str
    fields: list[FieldProblem] | None = None


class ErrorBody(_Model):
    """The body of every failed request."""

    error: ErrorDetail


# --- shared parameters --------------------------------------------------------------------


class PageQuery(_Model):
    """``?limit=&cursor=``: a page size and the opaque cursor of the previous page."""

    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class AccountPath(_Model):
    """``/accounts/{account_id}``."""

    account_id: UUID


# --- accounts -----------------------------------------------------------------------------


# An account kind's name (the registry's ``AccountKind.name``); which kinds exist is data.
Kind = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",  # kinds.registry.KIND_NAME
        description="the account's kind, e.g. google or microsoft",
    ),
]


class AccountsQuery(PageQuery):
    """Filters of ``GET /accounts``."""

    status: Status | None = None
    provider: Kind | None = None


class ConnectAccount(_Model):
    """Connect an account (or give an existing one new credentials, re-activating it)."""

    provider: Kind
    email: Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_no_nul)] = Field(
        description="the provider's user id (an email address)"
    )
    refresh_token: Annotated[
        SecretStr, Field(min_length=1, max_length=10_000), AfterValidator(_secret_no_nul)
    ] = Field(description="the OAuth refresh token; stored encrypted, never returned")


class AccountOut(_Model):
    """An account; ``email`` is the provider's user id."""

    id: UUID
    provider: Kind
    email: str
    shard: int
    status: Status
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class AccountPage(_Model):
    """A page of accounts, oldest first; ``next_cursor`` is null on the last page."""

    items: list[AccountOut]
    next_cursor: str | None


class DeleteQuery(_Model):
    """``DELETE /accounts/{id}?purge=true``: the purge must be asked for explicitly."""

    purge: bool = False


class SyncAccepted(_Model):
    """The sync request is in the account's shard stream; its actor syncs it soon."""

    account_id: UUID
    entry_id: str


class CalendarPath(_Model):
    """``/accounts/{account_id}/calendars/{calendar_id}``."""

    account_id: UUID
    # Provider ids are far shorter (Google's about 60 characters, Graph's about 150); this
    # bound also keeps any id, percent-encoded, inside the server's 8 KiB request line.
    calendar_id: str = Field(min_length=1, max_length=255)


class CalendarOut(_Model):
    """A listed calendar and whether it syncs."""

    id: str
    name: str
    primary: bool
    access_role: str | None
    allowed: bool = Field(description="the provider lets it sync")
    selected: bool = Field(description="it syncs: the user's choice, else the default")
    choice: bool | None = Field(description="the user's choice; null: the default rule")
    default: bool = Field(description="the default: primary, or owned or writable")
    watchable: bool = Field(description="false: the provider refuses a channel; it is polled")
    removed_at: datetime | None


class CalendarList(_Model):
    """The account's listed calendars, by id."""

    items: list[CalendarOut]


class CalendarChoice(_Model):
    """Select or deselect a calendar; null returns it to the default rule."""

    selected: bool | None


class SetAsideItem(_Model):
    """A provider item a sync could not read or store, set aside while its calendar went on."""

    calendar_id: str
    item_id: str = Field(description="the provider's id, or sha256:<hex> of the raw item")
    reason: str = Field(description="the field it lacked, or the value Postgres refused")
    attempts: int
    first_seen: datetime
    last_seen: datetime


class SetAsideList(_Model):
    """The account's items set aside, oldest first (at most 200)."""

    items: list[SetAsideItem]


class RetryAccepted(_Model):
    """A full round of each calendar holding items set aside is in the account's stream."""

    account_id: UUID
    calendars: list[str]
    entry_ids: list[str]


class PreferencesIn(_Model):
    """An account's sync preferences (all fields; a PUT replaces them)."""

    auto_sync: bool
    sync_frequency_minutes: int = Field(ge=MIN_FREQUENCY_MINUTES, le=MAX_FREQUENCY_MINUTES)
    sync_window_back_days: int | None = Field(
        default=None, ge=0, le=MAX_WINDOW_DAYS, description="null: the replica's default"
    )
    sync_window_ahead_days: int | None = Field(
        default=None, ge=1, le=MAX_WINDOW_DAYS, description="null: the replica's default"
    )


class PreferencesOut(PreferencesIn):
    """The account's preferences; ``stored`` is false while it has the defaults."""

    account_id: UUID
    stored: bool


# --- outbox -------------------------------------------------------------------------------


class _Enqueue(_Model):
    account_id: UUID
    workspace_id: Text
    calendar_id: Text = DEFAULT_CALENDAR


class _SourceFields(_Enqueue):
    source_type: Text
    source_id: Text
    event_type: Text
    version: int = Field(ge=0, le=MAX_VERSION, description="per source; lower is stale")


class EnqueueUpsert(_SourceFields):
    """UPSERT_EVENT: the source's event says exactly this. Timed (``start``/``end``, with
    offsets) or all-day (``start_date``/``end_date``, end exclusive), never both."""

    operation: Literal["UPSERT_EVENT"]
    title: Text
    description: LongText | None = None
    start: Moment | None = None
    end: Moment | None = None
    time_zone: Text | None = None
    start_date: date | None = None
    end_date: date | None = None


class EnqueueCancel(_SourceFields):
    """CANCEL_EVENT: delete the source's event as of ``version``."""

    operation: Literal["CANCEL_EVENT"]


class EnqueueRebuild(_Enqueue):
    """REBUILD_ALL: delete and recreate every event of the workspace in the calendar."""

    operation: Literal["REBUILD_ALL"]


class EnqueueRequest(
    RootModel[
        Annotated[EnqueueUpsert | EnqueueCancel | EnqueueRebuild, Field(discriminator="operation")]
    ]
):
    """One outbox request, by ``operation``."""


class Enqueued(_Model):
    """The queued item."""

    id: int


class ItemPath(_Model):
    """``/outbox/dead-letters/{item_id}``."""

    item_id: int = Field(ge=1, le=MAX_BIGINT)


class DeadLettersQuery(PageQuery):
    """Filters of ``GET /outbox/dead-letters``."""

    account_id: UUID | None = None


class DeadLetterOut(_Model):
    """An item given up on, with its last error."""

    id: int
    account_id: UUID
    operation: str
    workspace_id: str
    calendar_id: str
    source_type: str | None
    source_id: str | None
    event_type: str | None
    version: int
    attempts: int
    last_error: str | None
    created_at: datetime | None


class DeadLetterPage(_Model):
    """A page of dead letters, lowest id first."""

    items: list[DeadLetterOut]
    next_cursor: str | None


class Replayed(_Model):
    """The dead letter is pending again (attempts 0, due now)."""

    id: int
    replayed: bool


class OutboxStatusQuery(_Model):
    """``GET /outbox/status``, for every account or one."""

    account_id: UUID | None = None


class OutboxStatusOut(_Model):
    """Items by state, and the oldest pending one."""

    counts: dict[str, int]
    oldest_pending_at: datetime | None
    oldest_pending_age_s: float | None


# --- shards -------------------------------------------------------------------------------


class ShardOut(_Model):
    """One shard: its lease holder (Redis), fencing epoch (Postgres) and accounts."""

    shard: int
    holder: str | None = Field(description="replica holding the lease; null: free")
    lease_ms_left: int | None
    epoch: int | None = Field(description="fencing epoch; null: never taken")
    epoch_owner: str | None
    accounts: int


class MemberOut(_Model):
    """A live replica and when its heartbeat lapses unless renewed."""

    replica_id: str
    lapses_in_ms: int


class ShardsOverview(_Model):
    """Every shard and the live replicas."""

    shard_count: int
    members: list[MemberOut]
    shards: list[ShardOut]


class OpenApiDocument(RootModel[dict[str, Any]]):
    """This API's OpenAPI 3.1 document."""
