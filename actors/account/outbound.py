"""The account's outbound writer: drains its due outbox items into provider writes.

The account actor is the only writer of its account, so a drain never races an inbound sync.

Invariants:
- one drain reads at most ``batch`` pending items in id order (and every other pending item of
  their sources), due or backing off, plans them all (``outbox.plan``: staleness is judged
  against a source's newest item even while it backs off), marks the stale ones skipped and the
  settled ones done at once, then runs, in plan order, the units whose items are all due
  (``actors.account.outbound_steps``); an item is done only once the provider matches it;
- a failed unit follows ``outbox.retry``: its items back off alone (``schedule_retry``), or are
  dead-lettered with the error, or the whole account is held (throttling: no call until the
  hold ends, also across posts; auth: the error propagates and the actor parks, items pending);
- stored errors go through the log redactor, so no secret reaches ``last_error``;
- ``drain`` answers when it should run next (the earliest pending item, or the hold's end), so
  the actor arms one deadline instead of polling;
- a write whose outcome is unknown (a lost answer: timeout, 5xx, unreadable body) may have
  applied; its source stays ``uncertain`` until ``settle_uncertain`` (run before every sync)
  asked the provider, so a sync never reports our own write as the user's change. A new
  incarnation starts with every source that failed before (or whose create is unknown)
  uncertain: the last one may have died mid-write.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from actors.account.calls import AccountCalls
from actors.account.outbound_steps import UnitSteps
from config.redact import redact_text
from outbox.model import Binding, BindingState, Operation, OutboxItem, SourceKey
from outbox.plan import Plan, WorkUnit, plan
from outbox.retry import (
    DeadLetter,
    ErrorClass,
    HoldAccount,
    RetryItem,
    RetryPolicy,
    classify,
    decide,
)
from providers.errors import ProviderError
from store.bindings import bindings_for, bindings_of
from store.db import PgPoolConnection
from store.fencing import fenced_transaction
from store.outbox import (
    dead_letter,
    inherited,
    mark_done,
    mark_skipped,
    next_due_at,
    pending_items,
    schedule_retry,
)

log = structlog.get_logger("actors.account.outbound")

STALE = "stale: a newer version of the source was applied or queued"


class OutboundWriter:
    """The outbox writer of one actor incarnation (the hold it keeps dies with it)."""

    __slots__ = ("batch", "calls", "held_until", "policy", "uncertain")

    def __init__(
        self,
        calls: AccountCalls,
        *,
        max_attempts: int = 10,
        batch: int = 100,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 3600.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.calls = calls
        self.batch = batch
        self.policy = RetryPolicy(retry_initial_s, retry_max_s, max_attempts)
        self.held_until: datetime | None = None  # throttled: no provider call before then
        # Sources whose last write may have applied unseen; None: not known yet (see top).
        self.uncertain: set[SourceKey] | None = None

    async def drain(self) -> datetime | None:
        """Write one batch of due items; when to drain next (None: nothing pending)."""
        ctx, account_id = self.calls.ctx, self.calls.account.id
        now = ctx.clock()
        if self.held_until is not None and now < self.held_until:
            return self.held_until
        items = await pending_items(ctx.pool, account_id, limit=self.batch)
        if not items:  # due or backing off alike: nothing is pending
            self.held_until = None
            return None
        held_until, finished_all = await self._write(items, now)
        self.held_until = held_until
        if finished_all and len(items) < self.batch:
            # Everything pending was read and is finished; an item inserted meanwhile wakes
            # the actor again (NOTIFY, or the fallback poll).
            return None
        due = await next_due_at(ctx.pool, account_id)
        if due is None or held_until is None:
            return due
        return max(due, held_until)

    async def inherit(self) -> bool:
        """Read what the last incarnation left (one query): whether a drain must run before the
        first sync (a create of unknown outcome, or an item due, maybe in flight when it
        ended). With nothing tried before either, no source starts ``uncertain``."""
        ctx, account_id = self.calls.ctx, self.calls.account.id
        left = await inherited(ctx.pool, account_id, now=ctx.clock())
        if self.uncertain is None and not (left.unknown_creates or left.tried):
            self.uncertain = set()  # the first sync need not read the outbox
        return left.unknown_creates or left.due

    async def settle_uncertain(self) -> None:
        """Adopt what writes of unknown outcome did at the provider (reads only), so the next
        sync sees those events as our echo; cheap when nothing is uncertain."""
        if self.uncertain is not None and not self.uncertain:
            return
        ctx, account_id = self.calls.ctx, self.calls.account.id
        if self.held_until is not None and ctx.clock() < self.held_until:
            return  # throttled: the sync about to run waits as well
        items = await pending_items(ctx.pool, account_id, limit=self.batch)
        bindings = await self._bindings(items) if items else {}
        work = plan(items, bindings)
        uncertain = self.uncertain
        if uncertain is None:  # the last incarnation's: anything tried, or created unseen
            uncertain = {
                item.source for item in items if item.attempts > 0 and item.source is not None
            }
            uncertain.update(
                source
                for source, binding in bindings.items()
                if binding.state is BindingState.CREATING
            )
        runner = UnitSteps(self.calls, self._fenced)
        settled: set[int] = set()
        for index, unit in enumerate(work.units):
            if unit.source not in uncertain:
                continue
            finished = _newly_finished(work, settled, index)
            if await runner.settle(unit, bindings.get(unit.source), finished):
                settled.add(index)
        # What the provider does not show was not applied: the item's own retry writes it.
        self.uncertain = set()

    async def _write(
        self, items: Sequence[OutboxItem], now: datetime
    ) -> tuple[datetime | None, bool]:
        """Plan ``items`` (pending, due or not) and write the units all of whose items are due
        at ``now``; (the end of the account's hold if one began, else None; whether every
        item is finished)."""
        bindings = await self._bindings(items)
        work = plan(items, bindings)
        due = {
            item.id for item in items if item.next_attempt_at is None or item.next_attempt_at <= now
        }
        if work.skipped or work.done:
            async with self._fenced() as conn:
                await mark_skipped(conn, work.skipped, STALE)
                await mark_done(conn, work.done)
        attempts = {item.id: item.attempts for item in items}
        runner = UnitSteps(self.calls, self._fenced)  # one per drain: policy read afresh
        succeeded: set[int] = set()
        for index, unit in enumerate(work.units):
            if not due.issuperset(unit.completes):
                continue  # backing off: the source waits for its newest item's next attempt
            finished = _newly_finished(work, succeeded, index)
            try:
                await runner.apply(unit, bindings.get(unit.source), finished)
            except ProviderError as error:
                held_until = await self._failed(unit, error, attempts)
                if held_until is not None:
                    return held_until, False  # the rest waits for the next drain
            else:
                succeeded.add(index)
        # Stale and settled items were finished above; the others are if every unit succeeded.
        return None, len(succeeded) == len(work.units)

    async def _bindings(self, items: Sequence[OutboxItem]) -> dict[SourceKey, Binding]:
        """The bindings ``plan`` needs: each source's, and every one in a REBUILD_ALL scope."""
        account_id = self.calls.account.id
        sources = {item.source for item in items if item.source is not None}
        scopes = {
            (item.workspace_id, item.calendar_id)
            for item in items
            if item.operation is Operation.REBUILD_ALL
        }
        async with self.calls.ctx.pool.acquire() as conn:
            found = await bindings_of(conn, account_id, sources)
            for workspace_id, calendar_id in sorted(scopes):
                for binding in await bindings_for(conn, account_id, workspace_id, calendar_id):
                    found[binding.source] = binding
        return found

    async def _failed(
        self, unit: WorkUnit, error: ProviderError, attempts: dict[int, int]
    ) -> datetime | None:
        """Record a failed unit as ``outbox.retry`` decides; the end of an account hold it
        starts (throttled), else None: the drain goes on."""
        failure = classify(error)
        if failure.error is ErrorClass.TRANSIENT and self.uncertain is not None:
            self.uncertain.add(unit.source)  # a lost answer: the write may have applied
        if failure.error is ErrorClass.AUTH:
            raise error  # the actor parks as for a sync; the items stay pending as they are
        if failure.error in (ErrorClass.CONFLICT, ErrorClass.GONE):
            # The unit already applied ``outbox.rules`` to what they settle (a user's edit, a
            # deleted event); what is left, e.g. a missing calendar, backs off like a 5xx.
            failure = replace(failure, error=ErrorClass.TRANSIENT)
        failure = replace(failure, message=redact_text(failure.message))
        tries = max(attempts.get(item_id, 0) for item_id in unit.completes)
        decision = decide(failure, tries, self.policy, self.calls.ctx.rng)
        outcome = decision.item if isinstance(decision, HoldAccount) else decision
        now = self.calls.ctx.clock()
        async with self._fenced() as conn:
            for item_id in unit.completes:
                if isinstance(outcome, RetryItem):
                    at = now + timedelta(seconds=outcome.delay_s)
                    await schedule_retry(
                        conn,
                        item_id,
                        attempts=outcome.attempts,
                        next_attempt_at=at,
                        error=outcome.error,
                    )
                elif isinstance(outcome, DeadLetter):
                    await dead_letter(conn, item_id, attempts=outcome.attempts, error=outcome.error)
        for item_id in unit.completes:
            if isinstance(outcome, RetryItem | DeadLetter):
                attempts[item_id] = outcome.attempts  # a REBUILD_ALL id may fail in two units
        log.info(
            "outbox write failed",
            items=list(unit.completes),
            error=failure.message,
            outcome=type(outcome).__name__,
        )
        if isinstance(decision, HoldAccount) and decision.delay_s is not None:
            return now + timedelta(seconds=decision.delay_s)
        return None

    def _fenced(self) -> AbstractAsyncContextManager[PgPoolConnection]:
        calls = self.calls
        return fenced_transaction(calls.ctx.pool, calls.account.shard, calls.epoch)


def _newly_finished(work: Plan, succeeded: set[int], index: int) -> tuple[int, ...]:
    """The items that unit ``index`` finishes if it succeeds after the ``succeeded`` ones."""
    before = set(work.finished(succeeded))
    return tuple(item for item in work.finished(succeeded | {index}) if item not in before)
