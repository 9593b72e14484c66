"""Push channels of the account actor: open, replace, recreate (Google watch channels, Graph
subscriptions), each stored in ``push_channels``.

Invariants:
- a channel is opened only after the calendar's first completed sync, and only when the replica
  has a push address for the kind (the core decides, from the provider's ``ChannelScope``):
  Graph subscriptions are per mailbox (``/me/events``), so a Microsoft account has one, keyed
  to its ``primary`` calendar;
- every channel gets a fresh random id (``uuid4().hex``; Graph names its own) and a fresh random
  token (``token_urlsafe(32)``); only ``hash_token`` of the token is stored, never the token;
- a renewal is a replacement, for both kinds: the new channel is started at the provider, then
  ONE fenced transaction saves its row and retires the row it replaces (accepted by the gateway
  for ``retired_grace_s``: messages sent on it before may arrive late), then the old channel is
  stopped at the provider (a failure there is logged: it only means duplicates until it ends);
- a stale epoch rolls the transaction back: the row is never written by a former owner (a
  channel opened just before is left to expire at the provider);
- stopping the actor or parking it never touches channels: another replica may take over the
  account and keep them; a Google calendar that is no longer followed (removed from the list or
  disabled) has its channel stopped at the provider, then its row deleted;
- a Graph subscription covers the whole mailbox, so it lives as long as the account's actor.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

import structlog

from actors.account.context import AccountContext
from providers.errors import ProviderError
from providers.interface import CalendarProvider
from providers.models import PushChannel
from store.accounts import Account
from store.channels import (
    ChannelRow,
    delete_channel,
    hash_token,
    retire_channel,
    save_channel,
)
from store.fencing import fenced_transaction

T = TypeVar("T")
log = structlog.get_logger("actors.account.push")


class ProviderCall(Protocol):
    """Calls the provider with a fresh access token (refreshing once on 401)."""

    def __call__(self, request: Callable[[str], Awaitable[T]], /) -> Awaitable[T]: ...


def as_push_channel(row: ChannelRow) -> PushChannel:
    """A stored row as the provider's ``PushChannel``; the token is unknown (never stored), which
    renewing (Graph PATCH) and stopping (Google channels.stop) do not need."""
    return PushChannel(
        id=row.id,
        calendar_id=row.calendar_id,
        resource_id=row.resource_id,
        expires_at=row.expires_at,
        token="",
    )


@dataclass(frozen=True, slots=True)
class PushScope:
    """What one push step needs from the actor: who, where, under which epoch, and how to call
    the provider (``call`` supplies a fresh access token and refreshes once on 401)."""

    ctx: AccountContext
    account: Account
    epoch: int
    address: str
    call: ProviderCall

    @property
    def provider(self) -> CalendarProvider:
        return self.ctx.providers[self.account.provider]

    @property
    def retired_grace_s(self) -> float:
        """How long a replaced channel stays accepted: the setting, else the kind's horizon."""
        configured = self.ctx.retired_grace_s
        if configured is not None:
            return configured
        return self.ctx.capabilities_of(self.account.provider).redelivery_horizon_s


def _fresh_id_and_token() -> tuple[str, str]:
    return uuid.uuid4().hex, secrets.token_urlsafe(32)


async def open_channel(
    scope: PushScope, calendar_id: str, *, replacing: ChannelRow | None = None
) -> ChannelRow:
    """Start a channel for ``calendar_id`` with a fresh id and secret and store it; a channel
    it replaces is retired (still accepted for the kind's redelivery horizon), then stopped at
    the provider."""
    channel_id, token = _fresh_id_and_token()
    channel = await scope.call(
        lambda access_token: scope.provider.start_push(
            access_token,
            calendar_id,
            address=scope.address,
            channel_id=channel_id,
            token=token,
            ttl_s=scope.ctx.push_ttl_s,
        )
    )
    row = await _store(scope, channel, hash_token(token), replacing)
    if replacing is not None and replacing.id != row.id:
        await _stop_replaced(scope, replacing)
    return row


async def replace_channel(scope: PushScope, row: ChannelRow) -> ChannelRow:
    """Replace ``row``'s channel before it expires: a new one first (a fresh id and secret, so
    a leaked secret dies with its channel; Google has no renewal, and Graph updates a
    clientState only undocumentedly), then the old one retired and stopped. Nothing sent in
    between is lost: both are accepted meanwhile."""
    return await open_channel(scope, row.calendar_id, replacing=row)


async def _stop_replaced(scope: PushScope, row: ChannelRow) -> None:
    """Stop a replaced channel at the provider; a failure only costs duplicate notifications
    until it expires, so it is logged, not raised."""
    try:
        await scope.call(
            lambda access_token: scope.provider.stop_push(access_token, as_push_channel(row))
        )
    except ProviderError as error:
        log.info("replaced channel not stopped", calendar=row.calendar_id, error=error.kind.value)


async def close_channel(scope: PushScope, row: ChannelRow) -> ChannelRow:
    """Stop ``row``'s channel at the provider (one it no longer knows counts as stopped), then
    delete the row, so the gateway rejects whatever the provider still sends for it; ``row``."""
    await scope.call(
        lambda access_token: scope.provider.stop_push(access_token, as_push_channel(row))
    )
    account = scope.account
    async with fenced_transaction(scope.ctx.pool, account.shard, scope.epoch) as conn:
        await delete_channel(conn, row.provider, row.id)
    return row


async def _store(
    scope: PushScope, channel: PushChannel, token_hash: bytes, replacing: ChannelRow | None
) -> ChannelRow:
    account = scope.account
    row = ChannelRow(
        provider=account.provider,
        id=channel.id,
        account_id=account.id,
        calendar_id=channel.calendar_id,
        shard=account.shard,
        token_hash=token_hash,
        resource_id=channel.resource_id,
        expires_at=channel.expires_at,
    )
    async with fenced_transaction(scope.ctx.pool, account.shard, scope.epoch) as conn:
        if replacing is not None and replacing.id != row.id:
            until = scope.ctx.clock() + timedelta(seconds=scope.retired_grace_s)
            await retire_channel(conn, replacing.provider, replacing.id, until)
        return await save_channel(conn, row)
