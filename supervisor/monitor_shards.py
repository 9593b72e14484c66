"""Read-only views of a replica's shard leases for the monitor's ``shards`` command. Pure: the
keeper's state goes in, frozen rows come out; taking them on the keeper's loop is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cluster.lease_state import LeaseState, ShardLease
from cluster.shard_keeper import ShardKeeper


@dataclass(frozen=True, slots=True)
class ShardRow:
    """One shard this replica holds, claims or has just lost."""

    shard: int
    state: str
    epoch: int | None
    lease_left_s: float | None  # until Redis may expire the lease at the earliest
    stop_in_s: float | None  # until the actors must stop unless it is renewed first
    lost_reason: str | None


@dataclass(frozen=True, slots=True)
class ShardsView:
    """The keeper's shards (standby ones left out) and counters."""

    replica_id: str
    members: tuple[str, ...]
    shard_count: int
    rows: tuple[ShardRow, ...]
    claims: int
    releases: int
    losses: int
    renewal_failures: int


def shard_rows(
    leases: Mapping[int, ShardLease], epochs: Mapping[int, int], now: float
) -> tuple[ShardRow, ...]:
    """A row per shard not in standby, by shard number; times are seconds from ``now``."""
    rows = []
    for shard in sorted(leases):
        lease = leases[shard]
        if lease.state is LeaseState.STANDBY:
            continue
        renewed, stop = lease.renewed_at, lease.stop_at()
        rows.append(
            ShardRow(
                shard=shard,
                state=lease.state.value,
                epoch=epochs.get(shard),
                lease_left_s=(
                    None
                    if renewed is None or not lease.holding
                    else renewed + lease.policy.expires_after_s - now
                ),
                stop_in_s=None if stop is None else stop - now,
                lost_reason=None if lease.lost_reason is None else lease.lost_reason.value,
            )
        )
    return tuple(rows)


def shards_view(keeper: ShardKeeper) -> ShardsView:
    """The keeper's state now; call it on the keeper's loop."""
    stats = keeper.statistics
    return ShardsView(
        replica_id=keeper.replica_id,
        members=tuple(keeper.members),
        shard_count=keeper.shard_count,
        rows=shard_rows(keeper.leases, keeper.epochs, keeper.clock()),
        claims=stats.claims,
        releases=stats.releases,
        losses=stats.losses,
        renewal_failures=stats.renewal_failures,
    )
