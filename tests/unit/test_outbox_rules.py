"""Idempotency keys, echoes, inbound removals, gone events and conflicts (pure)."""

from __future__ import annotations

import random
import re
from datetime import date
from uuid import UUID

import pytest

from outbox.model import (
    Binding,
    BindingState,
    ConflictPolicy,
    EventContent,
    Operation,
    SourceKey,
)
from outbox.rules import (
    AfterGet,
    ConflictAction,
    RemovalAction,
    after_direct_get,
    idempotency_key,
    is_echo,
    on_conflict,
    on_inbound_removal,
    parse_idempotency_key,
)
from providers.models import EventTiming

BINDING_ID = UUID("12345678-9abc-def0-1234-56789abcdef0")


def binding(state: BindingState = BindingState.LIVE, etag: str | None = '"e1"') -> Binding:
    return Binding(
        id=BINDING_ID,
        account_id=UUID(int=1),
        source=SourceKey("w1", "blocker", "b-1", "BLOCKER_DEADLINE"),
        calendar_id="primary",
        generation=2,
        state=state,
        provider_event_id="ob123g2",
        etag=etag,
        applied_version=3,
        content=EventContent("Due", EventTiming(True, date(2025, 1, 2), date(2025, 1, 3))),
    )


def test_idempotency_key_has_a_stable_documented_format() -> None:
    key = idempotency_key(BINDING_ID, 2)
    assert key == "ob123456789abcdef0123456789abcdef0g2"
    assert idempotency_key(BINDING_ID, 2) == key  # the same inputs, the same key, always


def test_idempotency_key_is_a_valid_google_event_id() -> None:
    # Google: lowercase base32hex (0-9, a-v), 5 to 1024 characters.
    rng = random.Random(7)
    for _ in range(200):
        key = idempotency_key(UUID(int=rng.getrandbits(128)), rng.randrange(0, 10**9))
        assert re.fullmatch(r"[0-9a-v]{5,1024}", key)


def test_a_new_generation_or_another_binding_gets_another_key() -> None:
    keys = {idempotency_key(UUID(int=b), g) for b in range(20) for g in range(20)}
    assert len(keys) == 400


def test_idempotency_key_parses_back() -> None:
    rng = random.Random(3)
    for _ in range(200):
        binding_id, generation = UUID(int=rng.getrandbits(128)), rng.randrange(0, 10**6)
        assert parse_idempotency_key(idempotency_key(binding_id, generation)) == (
            binding_id,
            generation,
        )


@pytest.mark.parametrize(
    "key", ["", "abc", "ob123g1", "OB123456789ABCDEF0123456789ABCDEF0G2", f"x{BINDING_ID.hex}g1"]
)
def test_other_event_ids_do_not_parse_as_ours(key: str) -> None:
    assert parse_idempotency_key(key) is None


def test_a_key_has_one_spelling() -> None:
    assert parse_idempotency_key(f"ob{BINDING_ID.hex}g01") is None
    assert parse_idempotency_key(f"ob{BINDING_ID.hex}g1") == (BINDING_ID, 1)


def test_idempotency_key_refuses_a_negative_generation() -> None:
    with pytest.raises(ValueError):
        idempotency_key(BINDING_ID, -1)


def test_only_the_etag_of_our_last_write_is_an_echo() -> None:
    assert is_echo(binding(), '"e1"')
    assert not is_echo(binding(), '"e2"')  # the user edited it after our write
    assert not is_echo(binding(), None)
    assert not is_echo(binding(etag=None), None)  # nothing recorded: cannot be ours
    assert not is_echo(binding(etag=None), '"e1"')


def test_an_inbound_removal_never_deletes_a_binding_by_itself() -> None:
    assert on_inbound_removal(binding(BindingState.LIVE)) is RemovalAction.VERIFY
    assert on_inbound_removal(binding(BindingState.CREATING)) is RemovalAction.VERIFY
    assert on_inbound_removal(binding(BindingState.DELETED)) is RemovalAction.IGNORE


@pytest.mark.parametrize(
    ("operation", "found", "expected"),
    [
        (Operation.UPSERT_EVENT, True, AfterGet.PROCEED),
        (Operation.UPSERT_EVENT, False, AfterGet.RECREATE),  # deleted in the provider: recreate
        (Operation.CANCEL_EVENT, True, AfterGet.PROCEED),
        (Operation.CANCEL_EVENT, False, AfterGet.DONE),  # already gone: success
    ],
)
def test_after_a_direct_get(operation: Operation, found: bool, expected: AfterGet) -> None:
    assert after_direct_get(operation, found) is expected


def test_a_rebuild_is_never_asked_about_a_direct_get() -> None:
    with pytest.raises(ValueError):
        after_direct_get(Operation.REBUILD_ALL, False)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (ConflictPolicy.LOCAL_WINS, ConflictAction.OVERWRITE),
        (ConflictPolicy.PROVIDER_WINS, ConflictAction.KEEP_PROVIDER),
        (ConflictPolicy.RECORD, ConflictAction.RECORD),
    ],
)
def test_conflict_policy_decides(policy: ConflictPolicy, expected: ConflictAction) -> None:
    assert on_conflict(policy) is expected
