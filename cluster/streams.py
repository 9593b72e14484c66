"""The Redis Stream layout of verified notifications, and the one XADD edge (docs/streams.md).

Invariants:
- one stream per shard (``cluster.keys.notifications_key``), in the shard's Redis Cluster slot;
- every field is a string (``cluster.keys.NOTIFICATION_FIELDS``): ``provider``, ``account_id``,
  ``calendar_id``, ``channel_id``, ``kind`` (a ``NotificationKind`` value), ``message_number``
  (empty when the provider sends none) and ``received_at`` (ISO 8601 UTC);
- no secret (token, clientState) is ever part of an entry;
- the gateway never trims: the consumer trims with ``XTRIM MINID`` after acknowledging, so an
  entry cannot vanish before an actor saw it;
- a verified provider notification (``append_notifications``) is appended by one script per
  entry, atomically: a channel has at most one entry of a kind not yet read by its replica (a
  notification arriving meanwhile folds into it: the sync that entry starts begins after the
  inbox read it, hence after this notification arrived); a message number not above the last
  accepted for its channel is dropped as a replay; the number is recorded only when the script
  ran, so a notification refused for an outage (503) is accepted when the provider retries it.
  The marker of an unread entry lapses after ``UNREAD_TTL_S``, so a shard nobody reads grows
  by at most one entry per channel and kind per period.
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.typing import EncodableT, FieldT

from cluster.keys import message_number_key, notifications_key, shard_of, unread_key
from providers.models import Notification
from store.channels import ChannelRow


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry to append: its stream and its fields."""

    key: str
    fields: dict[str, str]


def entry_for(
    channel: ChannelRow, notification: Notification, received_at: datetime
) -> StreamEntry:
    """The entry announcing a verified ``notification`` of ``channel``."""
    if received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    number = notification.message_number
    return StreamEntry(
        key=notifications_key(channel.shard),
        fields={
            "provider": channel.provider,
            "account_id": str(channel.account_id),
            "calendar_id": channel.calendar_id,
            "channel_id": channel.id,
            "kind": notification.kind.value,
            "message_number": "" if number is None else str(number),
            "received_at": received_at.astimezone(UTC).isoformat(),
        },
    )


def request_entry(
    shard: int,
    provider: str,
    account_id: UUID | str,
    kind: str,
    requested_at: datetime,
    *,
    calendar_id: str = "",
) -> StreamEntry:
    """An entry asking an account's actor for ``kind`` (an operator's, the API's, the audit's
    repair): no channel, no message number."""
    if requested_at.utcoffset() is None:
        raise ValueError("requested_at must be timezone-aware")
    return StreamEntry(
        key=notifications_key(shard),
        fields={
            "provider": provider,
            "account_id": str(account_id),
            "calendar_id": calendar_id,
            "channel_id": "",
            "kind": kind,
            "message_number": "",
            "received_at": requested_at.astimezone(UTC).isoformat(),
        },
    )


UNREAD_TTL_S = 3600
MESSAGE_NUMBER_TTL_S = 8 * 24 * 3600  # a Google channel lives at most 7 days (providers.md A)


class Outcome(enum.Enum):
    """What became of one verified notification."""

    APPENDED = "appended"  # a new entry
    COALESCED = "coalesced"  # folded into its channel's unread entry of the same kind
    REPLAYED = "replayed"  # its message number was not above the channel's last one: dropped


# KEYS: stream, unread marker, message number; ARGV: marker TTL, number TTL, number ("" for
# none), then the entry's fields and values. Numbers are compared as digit strings (Lua's
# numbers are doubles, Google's are 64-bit).
_APPEND_NOTIFICATION = """
local number = ARGV[3]
if number ~= '' then
  local last = redis.call('GET', KEYS[3])
  if last and (#number < #last or (#number == #last and number <= last)) then
    return {'replayed', ''}
  end
end
local outcome, id = 'coalesced', redis.call('GET', KEYS[2])
if not id then
  outcome = 'appended'
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
  redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
end
if number ~= '' then
  redis.call('SET', KEYS[3], number, 'EX', ARGV[2])
end
return {outcome, id}
"""


_SCRIPTS: weakref.WeakKeyDictionary[Redis, AsyncScript] = weakref.WeakKeyDictionary()


def unread_marker(shard: int, fields: Mapping[bytes | str, bytes | str]) -> str | None:
    """The unread marker of a read entry's channel and kind, or None for an entry of no
    channel (an operator's or the API's request)."""
    values = {_text(k): _text(v) for k, v in fields.items()}
    channel_id = values.get("channel_id", "")
    if not channel_id:
        return None
    return unread_key(shard, values.get("provider", ""), channel_id, values.get("kind", ""))


async def append_notifications(
    redis: Redis, entries: Sequence[StreamEntry]
) -> list[tuple[Outcome, str]]:
    """Append verified notifications (module docstring): per entry, its outcome and the id of
    the entry that carries it ("" for a replay), in one round trip."""
    if not entries:
        return []
    script = _SCRIPTS.get(redis)
    if script is None:  # its SHA is computed once per client, not once per notification
        script = _SCRIPTS[redis] = redis.register_script(_APPEND_NOTIFICATION)
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            fields = entry.fields
            shard = shard_of(entry.key)
            provider, channel_id = fields["provider"], fields["channel_id"]
            keys = [
                entry.key,
                unread_key(shard, provider, channel_id, fields["kind"]),
                message_number_key(shard, provider, channel_id),
            ]
            args: list[EncodableT] = [
                UNREAD_TTL_S,
                MESSAGE_NUMBER_TTL_S,
                fields.get("message_number", ""),
                *(item for field in fields.items() for item in field),
            ]
            await script(keys=keys, args=args, client=pipe)
        replies = await pipe.execute()
    return [(Outcome(_text(outcome)), _text(entry_id)) for outcome, entry_id in replies]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def append(redis: Redis, entries: Sequence[StreamEntry]) -> list[str]:
    """XADD every entry (no trimming) in one round trip; their ids, in order. For entries
    of no provider channel (operators', the API's); verified notifications go through
    ``append_notifications``.

    Raises whatever redis-py raises; entries appended before a failure stay (at least once).
    """
    if not entries:
        return []
    # No MULTI: the streams of a batch may live in different cluster slots.
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            # A copy typed as redis-py wants it (its dict parameter is invariant).
            fields: dict[FieldT, EncodableT] = {k: v for k, v in entry.fields.items()}
            pipe.xadd(entry.key, fields)
        ids = await pipe.execute()
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
