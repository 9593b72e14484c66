"""Every Redis key, stream and stream field this project uses, named in one place.

Invariants:
- every key starts with ``iw:``; every key of one shard carries the shard's hash tag
  ``{shard:<n>}``, so a shard's keys share one Redis Cluster slot (leases, notifications);
- other keys carry a hash tag of their own (``{members}``, ``{ratelimit:<name>}``), so a
  script touching one of them never spans slots;
- stream entries' fields are strings: ``NOTIFICATION_FIELDS`` (no secret among them) and
  ``CHANGE_FIELDS``;

Keys (type: written by -> read by):
- ``iw:{shard:<n>}:notifications`` (stream): the gateway and the operator/API commands -> the
  owning replica's inbox, consumer group ``iw-replicas``;
- ``iw:{shard:<n>}:lease`` (string): the shard keepers;
- ``iw:{members}`` (sorted set): every replica's heartbeat -> every keeper;
- ``iw:maintenance:lease`` (string): the maintenance schedulers;
- ``iw:{ratelimit:<name>}`` (hash): every provider call's token bucket;
- ``iw:changes`` (stream): the change-feed relay -> the host application.
"""

from __future__ import annotations

# -- shard keys ----------------------------------------------------------------------------------


def shard_tag(shard: int) -> str:
    """The Redis Cluster hash tag shared by every key of ``shard``."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{{shard:{shard}}}"


def shard_of(key: str) -> int:
    """The shard a shard key belongs to: ``iw:{shard:<n>}:...`` -> n."""
    return int(key.split("{shard:", 1)[1].split("}", 1)[0])


def notifications_key(shard: int) -> str:
    """The stream that carries ``shard``'s verified notifications."""
    return f"iw:{shard_tag(shard)}:notifications"


def unread_key(shard: int, provider: str, channel_id: str, kind: str) -> str:
    """Marks a channel's entry of ``kind`` appended but not yet read by its replica (its value
    is the entry id): notifications arriving meanwhile fold into that entry."""
    return f"iw:{shard_tag(shard)}:unread:{provider}:{channel_id}:{kind}"


def message_number_key(shard: int, provider: str, channel_id: str) -> str:
    """The highest message number accepted for a channel (Google numbers its messages)."""
    return f"iw:{shard_tag(shard)}:msgno:{provider}:{channel_id}"


# The gateway's Redis user: exactly the commands and keys of its appends (the script of
# ``cluster.streams.append_notifications``), and PING for its readiness probe. Deployments give
# the gateway this user, never the replicas' (docs/security.md); its password is added there.
GATEWAY_REDIS_ACL = (
    "on resetkeys resetchannels -@all +ping +evalsha +eval +script|load +script|exists"
    " +get +set +xadd"
    " ~iw:{shard:*}:notifications ~iw:{shard:*}:unread:* ~iw:{shard:*}:msgno:*"
)


def lease_key(shard: int) -> str:
    """The key whose holder owns ``shard``."""
    return f"iw:{shard_tag(shard)}:lease"


# The notification streams' consumer group: one consumer per replica (its replica id).
NOTIFICATIONS_GROUP = "iw-replicas"

# The fields of a notification entry, all strings (``cluster.streams``, docs/streams.md).
NOTIFICATION_FIELDS = (
    "provider",
    "account_id",
    "calendar_id",
    "channel_id",
    "kind",
    "message_number",
    "received_at",
)

# -- cluster-wide keys ---------------------------------------------------------------------------

# The fields of a changes-stream entry (``cluster.change_relay``; meanings in store.change_feed).
CHANGE_FIELDS = (
    "change_id",
    "account_id",
    "calendar_id",
    "event_id",
    "kind",
    "origin",
    "etag",
    "created_at",
    "reason",
)

MEMBERS_KEY = "iw:{members}"
MAINTENANCE_LEASE_KEY = "iw:maintenance:lease"
CHANGES_STREAM = "iw:changes"

_BUCKET_PREFIX = "iw:{ratelimit:"
_BUCKET_SUFFIX = "}"


def bucket_key(name: str) -> str:
    """The Redis key of token bucket ``name``: ``iw:{ratelimit:<name>}``."""
    if not name or "{" in name or "}" in name:
        raise ValueError(f"bucket name must be non-empty without braces, got {name!r}")
    return f"{_BUCKET_PREFIX}{name}{_BUCKET_SUFFIX}"


def throttled_accounts_key(name: str) -> str:
    """The Redis key of the accounts recently throttled on budget ``name`` (a sorted set by
    time): ``iw:{ratelimit:<name>}:throttled``, in the bucket's slot."""
    return f"{bucket_key(name)}:throttled"
