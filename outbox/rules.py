"""Small pure rules of outbound writes: idempotency keys, echoes, gone events, conflicts.

Invariants:
- a create's provider-side id (Google event id) and Graph ``transactionId`` are one string,
  derived from (binding id, generation) alone, so a retried create can never make a second
  event, and a recreation (generation + 1) always gets an id the provider never saw;
- an inbound change is our own echo only when its etag/changeKey equals the one our last write
  returned; anything else, a missing etag included, is a user edit;
- inbound removals (delta ``@removed``, Google ``cancelled``) never delete a binding by
  themselves: only a direct GET answering 404/410 does, because a delta removal may also mean
  "left the sync window" or be the echo of our own delete;
- these are decisions only: the actor performs the calls and records the outcome.
"""

from __future__ import annotations

import enum
import re
from uuid import UUID

from outbox.model import Binding, BindingState, ConflictPolicy, Operation

# Google event ids allow lowercase base32hex (0-9, a-v) and 5 to 1024 characters; Graph accepts
# any transactionId. "ob" + 32 hex digits + "g" + decimal generation uses only those characters,
# and "g" cannot occur in the hex part, so the key splits back unambiguously.
IDEMPOTENCY_PREFIX = "ob"
_KEY = re.compile(r"ob([0-9a-f]{32})g(0|[1-9][0-9]*)")


def idempotency_key(binding_id: UUID, generation: int) -> str:
    """The create id of a binding's event: ``ob<32 hex of binding id>g<generation>``."""
    if generation < 0:
        raise ValueError("generation is >= 0")
    return f"{IDEMPOTENCY_PREFIX}{binding_id.hex}g{generation}"


def parse_idempotency_key(key: str) -> tuple[UUID, int] | None:
    """(binding id, generation) of a key made by ``idempotency_key``; None for any other id."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    return UUID(hex=match[1]), int(match[2])


def is_echo(binding: Binding, inbound_etag: str | None) -> bool:
    """Whether an inbound change of the bound event is our own last write coming back."""
    return binding.etag is not None and inbound_etag == binding.etag


class RemovalAction(enum.Enum):
    """What an inbound removal of a bound event leads to."""

    IGNORE = "ignore"  # the binding is already deleted: the echo of our delete, or known gone
    VERIFY = "verify"  # GET the event directly; only 404/410 marks the binding deleted


def on_inbound_removal(binding: Binding) -> RemovalAction:
    """What to do when a delta or sync reports the bound event removed or cancelled."""
    if binding.state is BindingState.DELETED:
        return RemovalAction.IGNORE
    return RemovalAction.VERIFY


class AfterGet(enum.Enum):
    """What a pending write does once a direct GET said whether its event exists."""

    PROCEED = "proceed"  # the event is there: go on with the update or delete
    RECREATE = "recreate"  # an upsert whose event is gone: create it with generation + 1
    DONE = "done"  # a cancel whose event is already gone: success without a call


def after_direct_get(operation: Operation, found: bool) -> AfterGet:
    """The next step of an upsert or cancel after a direct GET of its bound event.

    When not ``found`` (404/410) the actor also marks the binding deleted: that GET is the only
    evidence strong enough to do so.
    """
    if operation is Operation.REBUILD_ALL:
        raise ValueError("REBUILD_ALL is planned into upserts and cancels first")
    if found:
        return AfterGet.PROCEED
    if operation is Operation.UPSERT_EVENT:
        return AfterGet.RECREATE
    return AfterGet.DONE


class ConflictAction(enum.Enum):
    """What an upsert does when its conditional write met a changed provider copy."""

    OVERWRITE = "overwrite"  # write again without the etag precondition
    KEEP_PROVIDER = "keep_provider"  # complete the item without writing
    RECORD = "record"  # write nothing, record a conflict row; the item is done as well


_ON_CONFLICT = {
    ConflictPolicy.LOCAL_WINS: ConflictAction.OVERWRITE,
    ConflictPolicy.PROVIDER_WINS: ConflictAction.KEEP_PROVIDER,
    ConflictPolicy.RECORD: ConflictAction.RECORD,
}


def on_conflict(policy: ConflictPolicy) -> ConflictAction:
    """The account policy's answer to an etag mismatch on an upsert's conditional write.

    Only upserts meet this: a cancel deletes unconditionally, since the application withdrew
    the source and a user's edit of its event does not make the event worth keeping.
    """
    return _ON_CONFLICT[policy]
