"""Pure verification of a parsed notification against the channel we stored for it.

Invariants:
- a notification is accepted only for a known channel whose stored token hash equals the hash
  of the token it carries, compared with ``hmac.compare_digest``, that is unexpired or, once
  replaced, still within its retirement grace (messages the provider sent before the
  replacement may arrive late, and a 4xx would lose them);
- a Google notification must also name the channel's resource id, when we know it (the sync
  message can arrive before the watch response that tells us the resource id);
- ids that no provider would issue (empty, over ``MAX_ID_LENGTH``, non-printable ASCII) are
  ``UNKNOWN_CHANNEL`` without a database lookup: they cannot name a stored channel, and a NUL
  would make PostgreSQL fail the query;
- nothing here logs, and no secret appears in a result.
"""

from __future__ import annotations

import enum
import hmac
from datetime import datetime

from providers.models import Notification
from store.channels import ChannelRow, hash_token

# Google caps channel ids at 64 characters and Graph ids are GUIDs; leave headroom.
MAX_ID_LENGTH = 256


class Rejection(enum.Enum):
    """Why a request or notification was not appended; also the statistics' keys."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNKNOWN_CHANNEL = "unknown_channel"
    BAD_TOKEN = "bad_token"
    RESOURCE_MISMATCH = "resource_mismatch"
    EXPIRED = "expired"


def plausible_id(channel_id: str) -> bool:
    """Whether ``channel_id`` could be a provider's channel/subscription id."""
    return (
        0 < len(channel_id) <= MAX_ID_LENGTH and channel_id.isascii() and channel_id.isprintable()
    )


def token_matches(token: str | None, token_hash: bytes) -> bool:
    """Whether ``token`` hashes to ``token_hash``, in time independent of where they differ."""
    if token is None:
        return False
    return hmac.compare_digest(hash_token(token), token_hash)


def verify(
    notification: Notification,
    channel: ChannelRow | None,
    now: datetime,
    *,
    check_resource: bool = False,
) -> Rejection | None:
    """None when ``notification`` genuinely comes from ``channel``, else why not."""
    if channel is None or channel.id != notification.channel_id:
        return Rejection.UNKNOWN_CHANNEL
    # The token first: an attacker learns nothing about expiry or resource without it.
    if not token_matches(notification.token, channel.token_hash):
        return Rejection.BAD_TOKEN
    if (
        check_resource
        and channel.resource_id is not None
        and notification.resource_id != channel.resource_id
    ):
        return Rejection.RESOURCE_MISMATCH
    if channel.retired_until is not None:
        # Replaced: its own expiry may pass while late messages still arrive; the grace rules.
        return Rejection.EXPIRED if channel.retired_until <= now else None
    if channel.expires_at is not None and channel.expires_at <= now:
        return Rejection.EXPIRED
    return None
