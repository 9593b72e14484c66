"""One replica's shard keeper: heartbeats, renews its leases, follows ``assign`` and tells the
replica which shards to start and stop.

Invariants:
- a shard's actors run only between a successful claim (lease set, then epoch taken in
  Postgres) and the moment its lease is released, refused, or overdue by ``LeasePolicy``'s stop
  point, which comes before any other replica can claim it;
- a shard moving away is stopped first (actors finish or abandon their in-flight transaction),
  then its lease is deleted; a claim waits a jittered delay so survivors do not claim in step;
- after it starts (or Redis returns) the keeper claims nothing for one heartbeat period, so
  replicas starting together see each other first instead of grabbing everything and handing
  it back;
- Redis being unreachable only makes renewals fail: shards stop at their stop point and are
  claimed again once Redis answers (the replica resumes by itself); no Redis call may outlast
  the earliest stop point (a hung or retrying client must not keep actors past it);
- every decision is made by the pure ``assign``/``plan`` and ``ShardLease``; this module only
  performs them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup

from cluster.assignment import assign, plan
from cluster.lease_state import LeasePolicy, LeaseState, ShardLease
from cluster.leases import LeaseStore, LeaseStoreUnavailable
from metrics import events as metrics
from store.db import PgPool
from store.fencing import take_shards

T = TypeVar("T")
log = structlog.get_logger("supervisor.shards")

# The keeper never sleeps longer than this, so a change of membership is seen promptly.
_MAX_NAP_S = 1.0
# Heartbeat this long after another member's predicted lapse, so the lapse has happened.
_LAPSE_MARGIN_S = 0.005
# How often the leases are read while a shard waits on the lease of a replica no longer live.
_ORPHAN_LOOK_S = 0.1


class ShardOwner(Protocol):
    """What runs a shard's accounts (the replica's accounts runtime)."""

    async def start_shard(self, shard: int, epoch: int) -> None:
        """Start the shard's actors under ``epoch``."""
        ...

    async def stop_shard(self, shard: int) -> None:
        """Stop the shard's actors and wait until their in-flight work is done."""
        ...


@dataclass(slots=True)
class KeeperStatistics:
    """Counters for the monitor and metrics."""

    claims: int = 0
    releases: int = 0
    losses: int = 0
    renewal_failures: int = 0


@dataclass(slots=True)
class ShardKeeper:
    """Keeps this replica's fair share of ``shard_count`` shards."""

    store: LeaseStore
    pool: PgPool
    owner: ShardOwner
    shard_count: int
    policy: LeasePolicy = field(default_factory=LeasePolicy)
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = field(default_factory=lambda: asyncio.get_running_loop().time)
    leases: dict[int, ShardLease] = field(default_factory=dict)
    epochs: dict[int, int] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    statistics: KeeperStatistics = field(default_factory=KeeperStatistics)
    heartbeat_ok: bool = False  # the last heartbeat answered (readiness: a live member)
    _claim_at: dict[int, float] = field(default_factory=dict)
    _beat_due: float = 0.0
    _lapse_at: float | None = None  # just after another member's heartbeat would lapse
    _look_due: float = 0.0  # when the leases are read again to follow the assignment
    _settled_at: float | None = None
    _pending: asyncio.Task[object] | None = None  # an abandoned Redis call still running
    _stops: TaskGroup | None = None  # stops under way beside the loop (set while ``run`` runs)
    _stopping: set[int] = field(default_factory=set)  # shards whose actors are being stopped

    def __post_init__(self) -> None:
        for shard in range(self.shard_count):
            self.leases.setdefault(shard, ShardLease(shard, self.policy))

    @property
    def replica_id(self) -> str:
        """The id this replica announces."""
        return self.store.replica_id

    def owned(self) -> list[int]:
        """The shards whose actors may run now: held, not lost, and their epoch taken (between
        the lease and the epoch an actor would find no epoch and stop at once)."""
        return [
            s
            for s, lease in self.leases.items()
            if lease.state is LeaseState.OWNED and s in self.epochs
        ]

    async def run(self) -> None:
        """Keep the share until cancelled; call ``shutdown`` afterwards for a clean release."""
        try:
            async with anyio.create_task_group() as group:
                self._stops = group
                while True:
                    await self.tick()
                    await asyncio.sleep(self._nap_s())
        finally:
            self._stops = None
            if self._pending is not None:
                self._pending.cancel()

    def epoch_refused(self, shard: int) -> None:
        """A write met a newer epoch: the shard is someone else's; the next tick stops it.

        Every refused write is logged, also one that meets the new epoch after the keeper
        already gave the shard up (as overdue, say): it is what a split brain looks like."""
        lease = self.leases[shard]
        log.info("write refused (stale epoch)", shard=shard, lease=lease.state.value)
        if lease.epoch_refused():
            log.warning("shard taken over (stale epoch)", shard=shard)

    async def tick(self) -> None:
        """One round: heartbeat, renew, stop what was lost, then release and claim."""
        members = await self._heartbeat()
        await self._renew()
        await self._stop_lost()
        if members is None or self.replica_id not in members:
            return
        now = self.clock()
        if members != self.members:
            self._look_due = now  # a member came or went: look at the leases now
        self.members = members
        if self._settled_at is None:  # just started, or Redis just came back
            self._settled_at = now + self.policy.renew_after_s
        if now < self._settled_at:
            return
        await self._follow_assignment(now)

    async def shutdown(self) -> None:
        """Stop every held shard, release its lease and leave the membership."""
        self._claim_at.clear()
        # Shards whose stop was under way when ``run`` ended are stopped here, to the end.
        self._stopping.clear()
        for shard, lease in self.leases.items():
            if lease.state is LeaseState.LOST:
                await self.owner.stop_shard(shard)
                self.epochs.pop(shard, None)
                lease.stopped()
        await self._release([s for s, lease in self.leases.items() if lease.holding])
        try:
            await self._bounded(self.store.leave())
        except LeaseStoreUnavailable:
            log.warning("could not leave the membership; the heartbeat will lapse")
        if self._pending is not None:
            self._pending.cancel()

    # -- steps ------------------------------------------------------------------------------

    async def _heartbeat(self) -> list[str] | None:
        now = self.clock()
        lapse_due = self._lapse_at is not None and now >= self._lapse_at
        if now < self._beat_due and self.members and not lapse_due:
            return self.members
        try:
            membership = await self._bounded(self.store.heartbeat())
        except LeaseStoreUnavailable as error:
            log.warning("heartbeat failed", error=str(error))
            self.heartbeat_ok = False
            self._settled_at = None
            self._look_due = 0.0
            return None
        answered = self.clock()
        self.heartbeat_ok = True
        # Every loop at most (not every third of the TTL), and once more just after the next
        # other member's heartbeat would lapse: a dead replica's shards are claimed as soon as
        # its heartbeat lapses, which this replica learns only from a heartbeat of its own.
        self._beat_due = now + min(self.policy.renew_after_s, _MAX_NAP_S)
        lapse = membership.next_lapse_s
        self._lapse_at = None if lapse is None else answered + lapse + _LAPSE_MARGIN_S
        return membership.members

    async def _renew(self) -> None:
        now = self.clock()
        due = [s for s, lease in self.leases.items() if lease.renew_due(now)]
        if not due:
            return
        sent_at = self.clock()
        try:
            answers = await self._bounded(self.store.renew(due))
        except LeaseStoreUnavailable as error:
            self.statistics.renewal_failures += 1
            metrics.lease_renewal_failures.inc()
            log.warning("lease renewal failed", shards=len(due), error=str(error))
            for shard in due:
                self.leases[shard].renewal_failed(sent_at)
            return
        for shard, kept in answers.items():
            lease = self.leases[shard]
            if kept:
                lease.renewed(sent_at)
            elif lease.renewal_refused():
                log.warning("lease lost", shard=shard)

    async def _stop_lost(self) -> None:
        now = self.clock()
        for shard, lease in self.leases.items():
            if lease.expire_if_overdue(now):
                log.warning("lease overdue; stopping the shard", shard=shard)
        lost = [
            s
            for s, lease in self.leases.items()
            if lease.state is LeaseState.LOST and s not in self._stopping
        ]
        if lost:
            await self._stop_then(lost, self._lost_stopped)

    async def _lost_stopped(self, shards: list[int]) -> None:
        for shard in shards:
            self.statistics.losses += 1
            self.epochs.pop(shard, None)
            self.leases[shard].stopped()
        self._look_due = 0.0  # the assignment may want them back, or give them elsewhere

    async def _stop_then(
        self, shards: list[int], then: Callable[[list[int]], Awaitable[None]]
    ) -> None:
        """Stop the shards' actors, then call ``then``: beside the loop while it runs, so that
        renewals of every other lease go on meanwhile (a stop may take a quarter of the TTL)."""
        self._stopping.update(shards)
        if self._stops is None:
            await self._stop_and(shards, then)
        else:
            self._stops.start_soon(
                self._stop_and, shards, then, name=f"shards[{self.replica_id}].stop"
            )

    async def _stop_and(
        self, shards: list[int], then: Callable[[list[int]], Awaitable[None]]
    ) -> None:
        try:
            # Together: one after another, each shard's bounded stop would add up.
            async with anyio.create_task_group() as group:
                for shard in shards:
                    group.start_soon(self.owner.stop_shard, shard, name=f"stop_shard[{shard}]")
        finally:
            self._stopping.difference_update(shards)
        await then(shards)

    async def _follow_assignment(self, now: float) -> None:
        if now < self._look_due and not self._claim_at:
            return
        try:
            current = await self._bounded(self.store.owners(list(self.leases)))
        except LeaseStoreUnavailable:
            return
        moves = plan(self.replica_id, current, assign(current, self.members))
        await self._release([s for s in moves.releases if self.leases[s].state is LeaseState.OWNED])
        # Steady (nothing to move): look again after a renewal period. Moving: every loop, and
        # often while a shard waits on the lease of a replica that is no longer a member (its
        # lease lapses any moment, and its claim should follow at once).
        orphaned = any(current.get(shard) not in self.members for shard in moves.waiting)
        if orphaned:
            self._look_due = now + _ORPHAN_LOOK_S
        elif moves.releases or moves.claims or moves.waiting:
            self._look_due = now
        else:
            self._look_due = now + self.policy.renew_after_s
        wanted = set(moves.claims)
        self._claim_at = {s: at for s, at in self._claim_at.items() if s in wanted}
        for shard in moves.claims:
            self._claim_at.setdefault(shard, now + self.policy.claim_delay_s(self.rng))
        due = [shard for shard, at in sorted(self._claim_at.items()) if at <= self.clock()]
        if not due:
            return
        # The membership may be up to a loop old: a replica that has not yet seen a newcomer
        # would take a shard released for it. So claims follow a fresh heartbeat and plan.
        try:
            self.members = (await self._bounded(self.store.heartbeat())).members
            current = await self._bounded(self.store.owners(list(self.leases)))
        except LeaseStoreUnavailable:
            return
        fresh = set(plan(self.replica_id, current, assign(current, self.members)).claims)
        for shard in due:
            del self._claim_at[shard]
        await self._claim([shard for shard in due if shard in fresh])

    async def _claim(self, shards: list[int]) -> None:
        """Claim ``shards`` together: one round trip for the leases, one statement for the
        epochs, then their actors start (a dead replica's shards move in one step)."""
        trying = [shard for shard in shards if self.leases[shard].start_claim()]
        if not trying:
            return
        sent_at = self.clock()
        try:
            won = await self._bounded(self.store.try_claim_many(trying))
        except LeaseStoreUnavailable:
            won = {}
        taken: list[int] = []
        for shard in trying:
            lease = self.leases[shard]
            if won.get(shard):
                lease.claimed(sent_at)
                taken.append(shard)
            else:
                lease.claim_failed()
        if not taken:
            return
        try:
            async with self.pool.acquire() as conn:
                epochs = await take_shards(conn, taken, self.replica_id)
        except BaseException:
            await self._release(taken, started=False)
            raise
        for shard in taken:
            epoch = self.epochs[shard] = epochs[shard]
            self.statistics.claims += 1
            log.info("shard claimed", shard=shard, epoch=epoch)
        for shard in taken:
            await self.owner.start_shard(shard, self.epochs[shard])

    async def _release(self, shards: list[int], *, started: bool = True) -> None:
        """Stop the shards' actors (renewing meanwhile), then delete each lease still ours.
        A lease already releasing is taken too: its stop was cut short when ``run`` ended."""
        shards = [
            s
            for s in shards
            if self.leases[s].release_requested() or self.leases[s].state is LeaseState.RELEASING
        ]
        if not shards:
            return
        if started:
            await self._stop_then(shards, self._delete_leases)
        else:
            await self._delete_leases(shards)

    async def _delete_leases(self, shards: list[int]) -> None:
        for shard in shards:
            lease = self.leases[shard]
            self.epochs.pop(shard, None)
            if lease.state is LeaseState.LOST:  # overdue or taken while stopping: nothing to delete
                lease.stopped()
                continue
            try:
                await self._bounded(self.store.release(shard))
            except LeaseStoreUnavailable:
                log.warning("could not release a lease; it will expire", shard=shard)
            if lease.released():
                self.statistics.releases += 1
                log.info("shard released", shard=shard)
            else:  # lost while the release was in flight
                lease.stopped()

    async def _bounded(self, call: Coroutine[object, object, T]) -> T:
        """Run a Redis call, giving up on it (as unreachable) at the earliest stop point of a
        held lease, and after a renewal period at most.

        The call is abandoned, not cancelled: a client may shield a half-read reply from
        cancellation, which would hold the keeper past the stop point. One abandoned call at a
        time: until it ends, every further call counts as unreachable at once.
        """
        if self._pending is not None and not self._pending.done():
            call.close()
            raise LeaseStoreUnavailable("an earlier Redis call has not answered yet")
        now = self.clock()
        # A stop point already past changes nothing here: that lease is overdue and the tick
        # stops its shard next; a call given no time at all would only block the calls after it.
        stops = [
            at for lease in self.leases.values() if (at := lease.stop_at()) is not None and at > now
        ]
        limit = min([now + self.policy.renew_after_s, *stops])
        task = asyncio.ensure_future(call)
        task.set_name(f"shards[{self.replica_id}].redis")
        done, _ = await asyncio.wait({task}, timeout=max(0.0, limit - now))
        if task in done:
            return task.result()
        self._pending = task
        task.add_done_callback(_consume_outcome)
        raise LeaseStoreUnavailable("Redis did not answer in time")

    def _nap_s(self) -> float:
        now = self.clock()
        moments = [self._beat_due, self._look_due, *self._claim_at.values()]
        if self._lapse_at is not None:
            moments.append(self._lapse_at)
        moments += [d for lease in self.leases.values() if (d := lease.next_deadline()) is not None]
        if self._settled_at is not None:
            moments.append(self._settled_at)
        # Moments already past were handled by the tick (or wait on something else, such as the
        # membership): only future ones may shorten the nap, or the keeper would spin.
        ahead = [moment - now for moment in moments if moment > now]
        return min([_MAX_NAP_S, *ahead])


def _consume_outcome(task: asyncio.Task[object]) -> None:
    """Retrieve an abandoned call's outcome, so its error is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()
