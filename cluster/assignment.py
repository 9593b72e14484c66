"""Shard assignment: which live replica should own each shard. Pure: no I/O, no clock.

The rule of ``assign``, with S shards, N live members, ``base = S // N``, ``extra = S % N``:
- quotas: ``extra`` members get base + 1 shards, the others base. The + 1 goes first to members
  holding more than base now (each keeps a shard instead of giving one away), then by name;
- sticky: a live member keeps its lowest-numbered shards up to its quota; the rest are excess;
- the pool: shards with no owner or a dead one (not live) plus every excess shard, ascending,
  handed out in consecutive runs to the members short of their quota, in name order;
- no live member: nothing can be owned, so the result is empty.

Invariants (tested in tests/unit/test_assignment.py):
- deterministic: the result depends on the inputs' contents, never on their iteration order;
- with a live member, every shard of ``current_owners`` gets a live owner;
- balanced: shard counts of live members (idle ones included) differ by at most one;
- minimal: exactly the pool changes owner, and no balanced assignment moves fewer shards;
- idempotent: ``assign(assign(x, m), m) == assign(x, m)``;
- steady while moving: releasing a pool shard (owner to None) or claiming it as targeted leaves
  every other target unchanged, so a gradual migration converges without flapping.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

# Shards per replica at the largest expected replica count: one shard of imbalance is then at
# most a tenth of a replica's load (docs/shards.md).
MIN_SHARDS_PER_REPLICA = 10


def max_replicas(shard_count: int) -> int:
    """The most replicas ``shard_count`` shards balance within 10% of a replica's load."""
    return shard_count // MIN_SHARDS_PER_REPLICA


def quotas(shard_count: int, holdings: Mapping[str, int]) -> dict[str, int]:
    """How many shards each member should own, given how many it holds now."""
    if not holdings:
        return {}
    base, extra = divmod(shard_count, len(holdings))
    # Capped rank (above base or not, then name): a member's quota changes only when its holding
    # crosses base + 1, so targets stay put while shards move one at a time.
    ranked = sorted(holdings, key=lambda member: (holdings[member] <= base, member))
    return {member: base + 1 if rank < extra else base for rank, member in enumerate(ranked)}


def assign(
    current_owners: Mapping[int, str | None], live_members: Collection[str]
) -> dict[int, str]:
    """Target owner of every shard in ``current_owners``; empty when no member is live."""
    members = sorted(set(live_members))
    if not members:
        return {}
    held: dict[str, list[int]] = {member: [] for member in members}
    pool: list[int] = []
    for shard in sorted(current_owners):
        owner = current_owners[shard]
        if owner in held:
            held[owner].append(shard)  # ascending, since shards are walked in order
        else:
            pool.append(shard)
    quota = quotas(len(current_owners), {member: len(held[member]) for member in members})
    target: dict[int, str] = {}
    for member in members:
        kept = held[member][: quota[member]]
        target.update(dict.fromkeys(kept, member))
        pool.extend(held[member][quota[member] :])
    pool.sort()
    start = 0
    for member in members:
        short = quota[member] - min(len(held[member]), quota[member])
        target.update(dict.fromkeys(pool[start : start + short], member))
        start += short
    return dict(sorted(target.items()))


@dataclass(frozen=True, slots=True)
class Plan:
    """One member's part of a move from current owners to target owners (shards ascending)."""

    releases: tuple[int, ...]  # mine now, someone else's target: stop, commit, release
    claims: tuple[int, ...]  # my target and unowned now: claim (after a jittered delay)
    waiting: tuple[int, ...]  # my target, held by another: its release or lease expiry first


def plan(member: str, current: Mapping[int, str | None], target: Mapping[int, str]) -> Plan:
    """What ``member`` must release and may claim to move from ``current`` towards ``target``."""
    releases: list[int] = []
    claims: list[int] = []
    waiting: list[int] = []
    for shard in sorted(set(current) | set(target)):
        owner = current.get(shard)
        goal = target.get(shard)
        if owner == member and goal != member:
            releases.append(shard)
        elif goal == member and owner is None:
            claims.append(shard)
        elif goal == member and owner != member:
            waiting.append(shard)
    return Plan(tuple(releases), tuple(claims), tuple(waiting))
