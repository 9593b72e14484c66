"""Push channels of the account actor: open, renew / replace, recreate (Google watch channels,
Graph subscriptions), each stored in ``push_channels``.

Invariants:
- a channel is opened only after the calendar's first completed sync, and only when the replica
  has a push address for the kind (the core decides, from the provider's ``ChannelScope``):
  Graph subscriptions are per mailbox (``/me/events``), so a Microsoft account has one, keyed
  to its ``primary`` calendar;
- every channel gets a fresh random id (``uuid4().hex``; Graph names its own) and a fresh random
  token (``token_urlsafe(32)``); only ``hash_token`` of the token is stored, never the token;
- the provider call comes first, then ONE fenced transaction saves the new row and deletes the
  row it replaces (a Google replacement or a recreated Graph subscription has a new id); a
  renewed Graph subscription keeps its id and clientState, so its row keeps its token hash;
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
from typing import Protocol, TypeVar

from actors.account.context import AccountContext
from providers.errors import NotFound
from providers.interface import CalendarProvider
from providers.models import PushChannel
from store.accounts import Account
from store.channels import ChannelRow, delete_channel, hash_token, save_channel
from store.fencing import fenced_transaction

T = TypeVar("T")


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


def _fresh_id_and_token() -> tuple[str, str]:
    return uuid.uuid4().hex, secrets.token_urlsafe(32)


async def open_channel(
    scope: PushScope, calendar_id: str, *, replacing: ChannelRow | None = None
) -> ChannelRow:
    """Start a channel for ``calendar_id`` and store it (deleting ``replacing``'s row)."""
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
    return await _store(scope, channel, hash_token(token), replacing)


async def replace_channel(scope: PushScope, row: ChannelRow) -> ChannelRow:
    """Extend ``row``'s channel: Graph renews it in place (or recreates it after a 404), Google
    opens a new channel and stops the old one. A channel the provider no longer knows
    (``NotFound``) is opened anew."""
    channel_id, token = _fresh_id_and_token()
    try:
        channel = await scope.call(
            lambda access_token: scope.provider.replace_push(
                access_token,
                as_push_channel(row),
                address=scope.address,
                new_channel_id=channel_id,
                new_token=token,
                ttl_s=scope.ctx.push_ttl_s,
            )
        )
    except NotFound:
        return await open_channel(scope, row.calendar_id, replacing=row)
    # Renewed in place: the provider kept the id and the clientState we hashed before.
    token_hash = row.token_hash if channel.id == row.id else hash_token(token)
    return await _store(scope, channel, token_hash, row)


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
            await delete_channel(conn, replacing.provider, replacing.id)
        return await save_channel(conn, row)
