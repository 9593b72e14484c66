"""The Redis Stream layout of verified notifications, and the one XADD edge (docs/streams.md).

Invariants:
- one stream per shard (``cluster.keys.notifications_key``), in the shard's Redis Cluster slot;
- every field is a string (``cluster.keys.NOTIFICATION_FIELDS``): ``provider``, ``account_id``,
  ``calendar_id``, ``channel_id``, ``kind`` (a ``NotificationKind`` value), ``message_number``
  (empty when the provider sends none) and ``received_at`` (ISO 8601 UTC);
- no secret (token, clientState) is ever part of an entry;
- the gateway never trims: the consumer trims with ``XTRIM MINID`` after acknowledging, so an
  entry cannot vanish before an actor saw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from cluster.keys import notifications_key
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


async def append(redis: Redis, entries: Sequence[StreamEntry]) -> list[str]:
    """XADD every entry (no trimming) in one round trip; their ids, in order.

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
