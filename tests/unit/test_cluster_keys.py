"""The Redis vocabulary of cluster/keys.py: the keys' shapes and the stream fields the writers
actually produce."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from cluster.change_relay import stream_fields
from cluster.keys import (
    CHANGE_FIELDS,
    bucket_key,
    lease_key,
    notifications_key,
    shard_of,
    shard_tag,
)
from store.change_feed import ChangeRow


def test_a_shards_keys_share_its_hash_tag_and_name_it_back() -> None:
    assert notifications_key(7) == "iw:{shard:7}:notifications"
    assert lease_key(7) == "iw:{shard:7}:lease"
    assert shard_tag(7) in notifications_key(7) and shard_tag(7) in lease_key(7)
    assert shard_of(notifications_key(7)) == shard_of(lease_key(7)) == 7
    with pytest.raises(ValueError, match="shard must be >= 0"):
        shard_tag(-1)


def test_bucket_keys_carry_their_own_hash_tag_and_refuse_braces() -> None:
    assert bucket_key("google") == "iw:{ratelimit:google}"
    for bad in ("", "a{b", "a}b"):
        with pytest.raises(ValueError, match="bucket name"):
            bucket_key(bad)


def test_a_change_entry_has_exactly_the_named_fields_all_strings() -> None:
    change = ChangeRow(
        id=12,
        account_id=uuid4(),
        calendar_id="primary",
        event_id="e1",
        kind="updated",
        origin="provider",
        etag=None,
        created_at=datetime(2026, 12, 6, 12, 0, tzinfo=UTC),
    )
    fields = stream_fields(change)
    assert tuple(fields) == CHANGE_FIELDS
    assert all(isinstance(value, str) for value in fields.values())
    assert fields["etag"] == "" and fields["created_at"] == "2026-12-06T12:00:00+00:00"
