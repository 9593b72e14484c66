"""One outbox work unit's provider calls, each outcome committed in one fenced transaction.

Invariants:
- a binding is committed (``begin_create`` / ``bump_generation``) before the create that uses
  its (id, generation) as the idempotency key, and every draft carries the binding id;
- a ``creating`` binding met again is an earlier create whose outcome is unknown: the provider
  is asked for the event by binding id first (adopted if found), and only then is it created
  under the same key, so a retry never makes a second event;
- a successful write commits the binding's new state, the provider's answer mirrored into
  ``events`` (change origin ``outbox``) and the items it finishes, together;
- between a DELETE and its recreation the binding goes straight to its next generation, never
  to ``deleted``; only a direct GET answering "gone" leads an update to a recreation;
- a provider error that these rules do not settle propagates to the caller (retry decisions);
- ``settle`` only reads: it adopts what a write of unknown outcome already did at the provider
  (a lost answer) and never writes, so it may run before a sync whatever the item's backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from actors.account.calls import AccountCalls
from actors.account.pause_points import AFTER_BINDING, AFTER_PROVIDER_WRITE, pause_point
from outbox.model import Binding, BindingState, ConflictPolicy, EventContent, Operation
from outbox.plan import Step, WorkUnit, steps
from outbox.rules import (
    AfterGet,
    ConflictAction,
    after_direct_get,
    idempotency_key,
    on_conflict,
)
from providers.errors import Conflict, NotFound
from providers.models import Event, EventDraft, EventTiming
from store.bindings import (
    begin_create,
    bump_generation,
    mark_deleted,
    record_conflict,
    record_write,
)
from store.db import PgPoolConnection
from store.events import mirror_removal, mirror_write
from store.outbox import conflict_policy, mark_done

Fenced = Callable[[], AbstractAsyncContextManager[PgPoolConnection]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where an upsert's provider calls left its binding."""

    binding: Binding
    event: Event | None  # the provider's answer to our write; None: nothing was written
    conflict_copy: Mapping[str, Any] | None = None  # the user's version (ConflictPolicy.RECORD)


def draft_of(content: EventContent, binding: Binding) -> EventDraft:
    """The provider draft of ``content``, marked with the binding's id."""
    return EventDraft(
        content.title, content.timing, content.description, binding_id=str(binding.id)
    )


def says(event: Event, content: EventContent) -> bool:
    """Whether a provider event already shows ``content`` (an adopted create needs no update)."""
    return (
        event.title == content.title
        and (event.description or None) == (content.description or None)
        and _same_time(event.timing, content.timing)
    )


def _same_time(a: EventTiming, b: EventTiming) -> bool:
    if a.all_day != b.all_day:
        return False
    if a.all_day:
        return (a.start_date, a.end_date) == (b.start_date, b.end_date)
    return (a.start_at, a.end_at) == (b.start_at, b.end_at)


class UnitSteps:
    """Runs the units of one account's drain; raises the provider errors it cannot settle."""

    __slots__ = ("_policy", "account_id", "calls", "fenced")

    def __init__(self, calls: AccountCalls, fenced: Fenced) -> None:
        self.calls = calls
        self.fenced = fenced
        self.account_id: UUID = calls.account.id
        self._policy: ConflictPolicy | None = None  # read at the first conflict of a drain

    async def apply(self, unit: WorkUnit, binding: Binding | None, finished: Sequence[int]) -> None:
        """Take the provider to what ``unit`` asks; ``finished`` items are done with it."""
        if unit.operation is Operation.CANCEL_EVENT:
            await self._cancel(unit, binding, finished)
            return
        content = unit.content
        assert content is not None  # plan: an upsert unit always carries its content
        planned = steps(unit, binding)
        gone = None
        if Step.DELETE in planned:
            assert binding is not None
            gone = await self._delete_bound(binding)
        last = planned[-1]
        if last is Step.UPDATE:
            assert binding is not None
            outcome = await self._update(unit, binding, content)
        elif last is Step.RECREATE:
            assert binding is not None
            bumped = await self._bump(binding, calendar_id=unit.calendar_id, gone=gone)
            outcome = await self._create(bumped, content, probe=False)
        elif binding is None:
            outcome = await self._create(await self._begin(unit), content, probe=False)
        else:
            outcome = await self._create(binding, content, probe=True)
        await pause_point(AFTER_PROVIDER_WRITE)  # tests only: off unless installed
        await self._record(unit, content, outcome, finished)

    async def settle(
        self, unit: WorkUnit, binding: Binding | None, finished: Sequence[int]
    ) -> bool:
        """Record ``unit`` as done if the provider already shows it (a write whose answer was
        lost did apply); False, calling nothing more, when it does not or cannot tell."""
        if binding is None or unit.recreate or binding.state is BindingState.DELETED:
            return False
        event_id = binding.provider_event_id
        if unit.operation is Operation.CANCEL_EVENT:
            if event_id is None or await self._get(binding.calendar_id, event_id) is not None:
                return False
            async with self.fenced() as conn:
                await mark_deleted(conn, binding.id, applied_version=unit.version)
                await mirror_removal(conn, self.account_id, binding.calendar_id, event_id)
                await mark_done(conn, finished)
            return True
        content = unit.content
        assert content is not None  # plan: an upsert unit always carries its content
        if event_id is None:  # a create: only the binding id it carries can find it
            provider, calendar_id = self.calls.provider, binding.calendar_id
            found = await self.calls.call(
                lambda token: provider.find_bound_event(token, calendar_id, str(binding.id))
            )
        else:
            found = await self._get(binding.calendar_id, event_id)
        if found is None or not says(found, content):
            return False
        await self._record(unit, content, Outcome(binding, found), finished)
        return True

    # -- provider calls ---------------------------------------------------------------------------

    async def _create(self, binding: Binding, content: EventContent, *, probe: bool) -> Outcome:
        """Create the binding's event; with ``probe``, adopt one an earlier create made."""
        provider, calendar_id = self.calls.provider, binding.calendar_id
        draft = draft_of(content, binding)
        if probe:
            found = await self.calls.call(
                lambda token: provider.find_bound_event(token, calendar_id, str(binding.id))
            )
            if found is not None:
                if says(found, content):
                    return Outcome(binding, found)
                # Ours, from an older version of the source: no user edit to protect yet.
                event = await self.calls.call(
                    lambda token: provider.update_event(token, calendar_id, found.id, draft)
                )
                return Outcome(binding, event)
        key = idempotency_key(binding.id, binding.generation)
        await pause_point(AFTER_BINDING)  # tests only: off unless installed
        try:
            event = await self.calls.call(
                lambda token: provider.create_event(token, calendar_id, draft, idempotency_key=key)
            )
        except Conflict as error:
            if error.reason != "deleted":
                raise
            # The event our earlier create made was deleted since: Google never reuses its id.
            binding = await self._bump(binding, calendar_id=None, gone=None)
            return await self._create(binding, content, probe=False)
        return Outcome(binding, event)

    async def _update(self, unit: WorkUnit, binding: Binding, content: EventContent) -> Outcome:
        """A conditional update of a live event; gone or changed events follow ``outbox.rules``."""
        provider, calendar_id = self.calls.provider, binding.calendar_id
        event_id = binding.provider_event_id
        assert event_id is not None  # live bindings always name their event
        draft = draft_of(content, binding)
        try:
            event = await self.calls.call(
                lambda token: provider.update_event(
                    token, calendar_id, event_id, draft, etag=binding.etag
                )
            )
            return Outcome(binding, event)
        except NotFound:
            current = await self._get(calendar_id, event_id)
            if after_direct_get(unit.operation, current is not None) is AfterGet.RECREATE:
                return await self._recreate_gone(binding, content)
            raise  # it exists, yet the update missed it: retried later
        except Conflict:
            pass  # the event changed since our last write
        current = await self._get(calendar_id, event_id)
        if current is None:
            return await self._recreate_gone(binding, content)
        if says(current, content):
            # It already says what we want: our own earlier write whose commit was lost (a
            # crash or takeover between the provider's answer and ours), not a user's edit.
            return Outcome(binding, current)
        action = (
            ConflictAction.OVERWRITE
            if unit.overwrite
            else on_conflict(await self._conflict_policy())
        )
        if action is ConflictAction.OVERWRITE:
            event = await self.calls.call(
                lambda token: provider.update_event(token, calendar_id, event_id, draft)
            )
            return Outcome(binding, event)
        if action is ConflictAction.KEEP_PROVIDER:
            return Outcome(binding, None)
        return Outcome(binding, None, conflict_copy=current.raw)

    async def _recreate_gone(self, binding: Binding, content: EventContent) -> Outcome:
        """The user deleted the event (a direct GET said so): create it anew, generation + 1."""
        # The stored copy stays: inbound sync reports the user's deletion as theirs.
        bumped = await self._bump(binding, calendar_id=None, gone=None)
        return await self._create(bumped, content, probe=False)

    async def _delete_bound(self, binding: Binding) -> str | None:
        """Delete the binding's event (found by binding id if a create's outcome is unknown);
        the id deleted, or None when there was none."""
        provider, calendar_id = self.calls.provider, binding.calendar_id
        event_id = binding.provider_event_id
        if event_id is None:
            found = await self.calls.call(
                lambda token: provider.find_bound_event(token, calendar_id, str(binding.id))
            )
            if found is None:
                return None
            event_id = found.id
        gone_id = event_id
        await self.calls.call(lambda token: provider.delete_event(token, calendar_id, gone_id))
        return gone_id

    async def _get(self, calendar_id: str, event_id: str) -> Event | None:
        provider = self.calls.provider
        return await self.calls.call(lambda token: provider.get_event(token, calendar_id, event_id))

    async def _cancel(
        self, unit: WorkUnit, binding: Binding | None, finished: Sequence[int]
    ) -> None:
        """Delete the source's event (gone already counts), leaving a tombstone binding."""
        gone = None
        if binding is not None and steps(unit, binding):
            gone = await self._delete_bound(binding)
        async with self.fenced() as conn:
            if binding is None:
                # A tombstone all the same: an older upsert arriving late is then stale.
                binding = await begin_create(conn, self.account_id, unit.source, unit.calendar_id)
            await mark_deleted(conn, binding.id, applied_version=unit.version)
            if gone is not None:
                await mirror_removal(conn, self.account_id, binding.calendar_id, gone)
            await mark_done(conn, finished)

    # -- storage ----------------------------------------------------------------------------------

    async def _begin(self, unit: WorkUnit) -> Binding:
        """Commit a new ``creating`` binding before the first create of its source."""
        async with self.fenced() as conn:
            return await begin_create(conn, self.account_id, unit.source, unit.calendar_id)

    async def _bump(
        self, binding: Binding, *, calendar_id: str | None, gone: str | None
    ) -> Binding:
        """Commit the next generation (maybe in another calendar) before its create; ``gone``
        is the event a DELETE step just removed, mirrored in the same transaction."""
        async with self.fenced() as conn:
            bumped = await bump_generation(conn, binding.id, calendar_id=calendar_id)
            if gone is not None:
                await mirror_removal(conn, self.account_id, binding.calendar_id, gone)
        return bumped

    async def _record(
        self, unit: WorkUnit, content: EventContent, outcome: Outcome, finished: Sequence[int]
    ) -> None:
        """Commit an upsert's outcome: binding, mirrored event, conflict row, finished items."""
        binding, event = outcome.binding, outcome.event
        async with self.fenced() as conn:
            if outcome.conflict_copy is not None:
                await record_conflict(
                    conn, binding, max(unit.completes), content, outcome.conflict_copy
                )
            if event is None:
                # Nothing written (the user's edit was kept): the etag stays the one of our last
                # write, so their version is still told apart from ours.
                assert binding.provider_event_id is not None
                await record_write(
                    conn,
                    binding.id,
                    provider_event_id=binding.provider_event_id,
                    etag=binding.etag,
                    applied_version=unit.version,
                    content=content,
                )
            else:
                await record_write(
                    conn,
                    binding.id,
                    provider_event_id=event.id,
                    etag=event.etag,
                    applied_version=unit.version,
                    content=content,
                )
                await mirror_write(conn, self.account_id, event)
            await mark_done(conn, finished)

    async def _conflict_policy(self) -> ConflictPolicy:
        if self._policy is None:
            self._policy = await conflict_policy(self.calls.ctx.pool, self.account_id)
        return self._policy
