"""The monitor's account commands as the replica's loop runs them: read an account's metadata from
Postgres, and sync, restart, quarantine or release its actor.

Invariants:
- every coroutine here runs on the replica's loop (the monitor's thread hands it over with
  ``run_coroutine_threadsafe``), so cells are only ever touched on their own loop;
- no token value is selected: credentials are read as metadata (key id, expiry, scopes);
- quarantine and release keep Postgres and the supervisor in step: an operator's quarantine goes
  through the supervisor's quarantine hook, as an automatic one does; a release sets the account
  active again before its actor starts, since a non-active account parks at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from actors.account.messages import SyncNow
from actors.cell import ActorState
from actors.errors import ActorUnavailable, ChildStartError
from actors.supervisor import Supervisor
from store.accounts import Account, get_account, mark_quarantined, set_status
from store.calendars import list_calendar_states
from store.channels import list_channels
from store.credentials import CredentialInfo, credential_info
from store.db import PgPool

QUARANTINED_BY_OPERATOR = "quarantined by operator"


class ActionRefused(Exception):
    """An operator command could not be carried out; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class CalendarInfo:
    """A stored calendar's sync state; the delta token itself is left out."""

    id: str
    name: str
    sync_enabled: bool
    has_delta_token: bool
    mid_round: bool
    last_synced_at: datetime | None  # set with each new delta token: the token's age
    removed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A push channel (subscription), without its token hash."""

    id: str
    calendar_id: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccountMetadata:
    """What Postgres knows of an account, for ``actor ID``."""

    account: Account
    credentials: CredentialInfo | None
    calendars: tuple[CalendarInfo, ...]
    channels: tuple[ChannelInfo, ...]


def account_id_of(actor_id: str) -> UUID | None:
    """The account id an actor runs under, or None for an actor that is not an account's."""
    try:
        return uuid.UUID(actor_id)
    except ValueError:
        return None


async def read_account_metadata(pool: PgPool, account_id: UUID) -> AccountMetadata | None:
    """The account's row, credential metadata, calendars and channels; None if it is unknown."""
    account = await get_account(pool, account_id)
    if account is None:
        return None
    credentials = await credential_info(pool, account_id)
    calendars = tuple(
        CalendarInfo(
            id=c.id,
            name=c.name,
            sync_enabled=c.sync_enabled,
            has_delta_token=c.delta_token is not None,
            mid_round=c.sync_cursor is not None,
            last_synced_at=c.last_synced_at,
            removed_at=c.removed_at,
        )
        for c in await list_calendar_states(pool, account_id)
    )
    channels = tuple(
        ChannelInfo(ch.id, ch.calendar_id, ch.expires_at)
        for ch in await list_channels(pool, account_id)
    )
    return AccountMetadata(account, credentials, calendars, channels)


@dataclass(slots=True)
class AccountOperations:
    """The monitor's changing commands; each coroutine returns one line saying what it did."""

    supervisor: Supervisor
    pool: PgPool

    async def metadata(self, actor_id: str) -> AccountMetadata | None:
        """The account's metadata from Postgres, or None for an unknown or non-account id."""
        account_id = account_id_of(actor_id)
        return None if account_id is None else await read_account_metadata(self.pool, account_id)

    async def sync_now(self, actor_id: str) -> str:
        """Ask the actor to sync every calendar now (the post a lost shard stream makes)."""
        try:
            self.supervisor.post_nowait(actor_id, SyncNow())
        except ActorUnavailable as error:
            raise ActionRefused(str(error)) from None
        return f"sync of {actor_id} requested"

    async def restart(self, actor_id: str) -> str:
        """Stop the actor and start it again from its spec; a quarantined one needs ``release``."""
        cell = self.supervisor.get(actor_id)
        if cell is None:
            raise ActionRefused(f"no actor {actor_id!r}")
        if cell.state is ActorState.QUARANTINED:
            raise ActionRefused(f"actor {actor_id} is quarantined; use 'release {actor_id}'")
        try:
            cell = await self.supervisor.restart_child(actor_id)
        except (ActorUnavailable, ChildStartError) as error:
            raise ActionRefused(f"actor {actor_id} did not restart: {error}") from None
        return f"restarted {actor_id}: {cell.state.value}"

    async def quarantine(self, actor_id: str) -> str:
        """Stop the actor and park it as quarantined; its account is marked so in Postgres."""
        cell = self.supervisor.get(actor_id)
        if cell is None:
            raise ActionRefused(f"no actor {actor_id!r}")
        if cell.state is ActorState.QUARANTINED:
            return f"actor {actor_id} is already quarantined"
        await self.supervisor.quarantine_child(actor_id, QUARANTINED_BY_OPERATOR)
        return f"quarantined {actor_id}"

    async def release(self, actor_id: str) -> str:
        """Set a quarantined account active again and restart its actor with a fresh budget."""
        cell = self.supervisor.get(actor_id)
        if cell is not None and cell.state is not ActorState.QUARANTINED:
            raise ActionRefused(f"actor {actor_id} is {cell.state.value}, not quarantined")
        account_id = account_id_of(actor_id)
        account = None if account_id is None else await get_account(self.pool, account_id)
        if cell is None and (account is None or account.status != "quarantined"):
            raise ActionRefused(f"no quarantined actor or account {actor_id!r}")
        if account is not None:
            await set_status(self.pool, account.id, "active", last_error=None)
        if cell is None:  # quarantined before this replica started: the next scan starts it
            return f"account {actor_id} is active again; the next scan starts its actor"
        try:
            cell = await self.supervisor.release(actor_id)
        except (ActorUnavailable, ChildStartError) as error:
            if account is not None:  # still parked here: say so in Postgres too
                await mark_quarantined(self.pool, account.id, str(error))
            raise ActionRefused(f"actor {actor_id} did not start: {error}") from None
        return f"released {actor_id}: {cell.state.value}, account active"
