"""Outbox planning: stale skips, merges, cancels, REBUILD_ALL barriers, and steps (pure)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest

from outbox.model import (
    Binding,
    BindingState,
    EventContent,
    ItemState,
    Operation,
    OutboxItem,
    SourceKey,
)
from outbox.plan import Plan, Step, WorkUnit, plan, steps
from outbox.rules import AfterGet, after_direct_get, idempotency_key
from providers.models import EventTiming

ACCOUNT = UUID(int=1)
UPSERT, CANCEL, REBUILD = Operation.UPSERT_EVENT, Operation.CANCEL_EVENT, Operation.REBUILD_ALL
LIVE, CREATING, DELETED = BindingState.LIVE, BindingState.CREATING, BindingState.DELETED


def key(source_id: str, workspace: str = "w1") -> SourceKey:
    return SourceKey(workspace, "task", source_id, "DEADLINE")


def content(title: str) -> EventContent:
    return EventContent(title, EventTiming(True, date(2025, 3, 1), date(2025, 3, 2)))


def upsert(
    item_id: int, source: SourceKey, version: int, title: str = "", calendar: str = "primary"
) -> OutboxItem:
    return OutboxItem(
        item_id,
        ACCOUNT,
        UPSERT,
        source.workspace_id,
        calendar,
        source,
        version,
        content(title or f"{source.source_id} v{version}"),
    )


def cancel(item_id: int, source: SourceKey, version: int, calendar: str = "primary") -> OutboxItem:
    return OutboxItem(
        item_id, ACCOUNT, CANCEL, source.workspace_id, calendar, source, version, None
    )


def rebuild(item_id: int, workspace: str = "w1", calendar: str = "primary") -> OutboxItem:
    return OutboxItem(item_id, ACCOUNT, REBUILD, workspace, calendar, None, 0, None)


def bound(
    source: SourceKey,
    version: int,
    state: BindingState = LIVE,
    calendar: str = "primary",
    generation: int = 0,
) -> Binding:
    return Binding(
        id=uuid5(NAMESPACE_URL, source.source_id),
        account_id=ACCOUNT,
        source=source,
        calendar_id=calendar,
        generation=generation,
        state=state,
        provider_event_id="ev",
        etag='"1"',
        applied_version=version,
        content=content(f"{source.source_id} v{version}"),
    )


def by_key(*bindings: Binding) -> dict[SourceKey, Binding]:
    return {binding.source: binding for binding in bindings}


A, B, C = key("a"), key("b"), key("c")


# -- one source -------------------------------------------------------------------------------


def test_consecutive_upserts_merge_into_one_call_with_the_newest_content() -> None:
    result = plan([upsert(1, A, 1), upsert(2, A, 2), upsert(3, A, 3, "newest")], {})
    assert result == Plan(
        units=(WorkUnit(A, UPSERT, "primary", 3, content("newest"), False, (1, 2, 3)),),
        skipped=(),
        done=(),
    )


def test_an_item_below_one_queued_before_it_is_stale() -> None:
    result = plan([upsert(1, A, 5), upsert(2, A, 3), upsert(3, A, 6)], {})
    assert result.skipped == (2,)
    assert [(unit.version, unit.completes) for unit in result.units] == [(6, (1, 3))]


def test_an_item_below_the_applied_version_is_stale_an_equal_one_is_written() -> None:
    result = plan([upsert(1, A, 3), upsert(2, A, 4, "same version again")], by_key(bound(A, 4)))
    assert result.skipped == (1,)
    assert result.units[0].content == content("same version again")
    assert plan([upsert(1, A, 3)], by_key(bound(A, 4))) == Plan((), (1,), ())


def test_equal_versions_the_later_item_wins() -> None:
    result = plan([upsert(1, A, 2, "first"), upsert(2, A, 2, "second")], {})
    assert result.units[0].content == content("second")
    assert result.units[0].completes == (1, 2)
    result = plan([upsert(1, A, 2), cancel(2, A, 2)], {})
    assert result.units[0].operation is CANCEL


def test_upserts_then_a_newer_cancel_become_one_cancel() -> None:
    result = plan([upsert(1, A, 1), upsert(2, A, 2), cancel(3, A, 3)], by_key(bound(A, 0)))
    assert result.units == (WorkUnit(A, CANCEL, "primary", 3, None, False, (1, 2, 3)),)


def test_a_cancel_then_a_newer_upsert_updates_the_event_still_there() -> None:
    result = plan([cancel(1, A, 2), upsert(2, A, 3, "back")], by_key(bound(A, 1)))
    (unit,) = result.units
    assert (unit.operation, unit.content, unit.completes) == (UPSERT, content("back"), (1, 2))
    assert steps(unit, bound(A, 1)) == (Step.UPDATE,)  # the cancel never reached the provider
    # The cancel would have deleted a user's edit: the update overwrites it, whatever the policy.
    assert unit.overwrite
    # Once the cancel was applied, the upsert recreates under a new generation.
    assert steps(unit, bound(A, 2, DELETED)) == (Step.RECREATE,)


def test_upserts_alone_leave_a_users_edit_to_the_conflict_policy() -> None:
    (unit,) = plan([upsert(1, A, 2), upsert(2, A, 3)], by_key(bound(A, 1))).units
    assert not unit.overwrite


def test_a_late_upsert_below_an_applied_cancel_is_stale() -> None:
    tombstone = bound(A, 7, DELETED)
    assert plan([upsert(1, A, 6)], by_key(tombstone)) == Plan((), (1,), ())


def test_a_cancel_of_an_unbound_source_is_planned_to_record_its_version() -> None:
    (unit,) = plan([cancel(4, A, 2, "team")], {}).units
    assert unit == WorkUnit(A, CANCEL, "team", 2, None, False, (4,))
    assert steps(unit, None) == ()


def test_an_upsert_to_another_calendar_moves_the_event() -> None:
    (unit,) = plan([upsert(1, A, 2, calendar="team")], by_key(bound(A, 1))).units
    assert unit.recreate and unit.calendar_id == "team"
    assert steps(unit, bound(A, 1)) == (Step.DELETE, Step.RECREATE)
    # A deleted binding has no event to move: the recreation goes straight to the new calendar.
    (unit,) = plan([upsert(1, A, 2, calendar="team")], by_key(bound(A, 1, DELETED))).units
    assert not unit.recreate and steps(unit, bound(A, 1, DELETED)) == (Step.RECREATE,)


def test_a_cancel_deletes_where_the_event_is() -> None:
    (unit,) = plan([cancel(1, A, 2, "team")], by_key(bound(A, 1))).units
    assert unit.calendar_id == "primary" and steps(unit, bound(A, 1)) == (Step.DELETE,)


# -- several sources --------------------------------------------------------------------------


def test_independent_sources_are_independent_units_oldest_first() -> None:
    result = plan([upsert(1, B, 1), upsert(2, A, 1), upsert(3, B, 2), cancel(4, C, 1)], {})
    assert [(unit.source, unit.completes) for unit in result.units] == [
        (B, (1, 3)),
        (A, (2,)),
        (C, (4,)),
    ]


def test_a_failing_source_does_not_change_the_others_work() -> None:
    items = [upsert(1, A, 1), upsert(2, B, 1), upsert(3, A, 2)]
    full = plan(items, {})
    assert plan([item for item in items if item.source == B], {}).units == full.units[1:]


# -- REBUILD_ALL ------------------------------------------------------------------------------


def test_a_rebuild_recreates_every_bound_event_of_its_workspace_and_calendar() -> None:
    bindings = by_key(
        bound(A, 3),
        bound(B, 2, CREATING),  # outcome unknown, content known: rebuilt too
        bound(C, 4, DELETED),  # cancelled: nothing to rebuild
        bound(key("elsewhere"), 1, calendar="team"),
        bound(key("other", "w2"), 1),
    )
    result = plan([rebuild(10)], bindings)
    assert result.units == (
        WorkUnit(A, UPSERT, "primary", 3, content("a v3"), True, (10,)),
        WorkUnit(B, UPSERT, "primary", 2, content("b v2"), True, (10,)),
    )
    assert steps(result.units[0], bindings[A]) == (Step.DELETE, Step.RECREATE)
    assert result.finished({0}) == ()  # the rebuild is done once all of its units are
    assert result.finished({0, 1}) == (10,)


def test_later_items_supersede_the_rebuilt_content() -> None:
    bindings = by_key(bound(A, 3), bound(B, 2))
    result = plan([rebuild(10), upsert(11, A, 4, "newer"), cancel(12, B, 3)], bindings)
    assert result.units == (
        WorkUnit(A, UPSERT, "primary", 4, content("newer"), True, (10, 11)),
        WorkUnit(B, CANCEL, "primary", 3, None, False, (10, 12)),
    )


def test_a_stale_item_after_a_rebuild_does_not_stop_it() -> None:
    result = plan([rebuild(10), upsert(11, A, 2)], by_key(bound(A, 3)))
    assert result.skipped == (11,)
    assert result.units == (WorkUnit(A, UPSERT, "primary", 3, content("a v3"), True, (10,)),)


def test_items_queued_before_a_rebuild_are_rebuilt_with_it_items_after_are_not() -> None:
    result = plan([upsert(1, A, 1), rebuild(2), upsert(3, B, 1)], {})
    assert result.units == (
        WorkUnit(A, UPSERT, "primary", 1, content("a v1"), True, (1, 2)),
        WorkUnit(B, UPSERT, "primary", 1, content("b v1"), False, (3,)),
    )


def test_a_cancelled_source_before_the_barrier_is_not_brought_back() -> None:
    result = plan([cancel(1, A, 4), rebuild(2)], by_key(bound(A, 3)))
    assert result.units == (WorkUnit(A, CANCEL, "primary", 4, None, False, (1, 2)),)


def test_items_of_another_calendar_or_workspace_ignore_the_barrier() -> None:
    items = [upsert(1, A, 1, calendar="team"), upsert(2, key("x", "w2"), 1), rebuild(3)]
    result = plan(items, {})
    assert [unit.recreate for unit in result.units] == [False, False]
    assert result.done == (3,)


def test_a_rebuild_with_nothing_to_rebuild_is_done_at_once() -> None:
    assert plan([rebuild(5), rebuild(6, "w2")], by_key(bound(A, 1, DELETED))) == Plan(
        (), (), (5, 6)
    )


def test_rebuilds_of_one_scope_merge() -> None:
    result = plan([rebuild(1), upsert(2, A, 4), rebuild(3)], by_key(bound(A, 3), bound(B, 1)))
    assert [(unit.source, unit.version, unit.completes) for unit in result.units] == [
        (A, 4, (1, 2, 3)),
        (B, 1, (1, 3)),
    ]
    assert all(unit.recreate for unit in result.units)


# -- steps and input checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "recreate", "expected"),
    [
        (None, False, (Step.CREATE,)),
        (None, True, (Step.CREATE,)),
        (CREATING, False, (Step.CREATE,)),  # same id: a lost create is not duplicated
        (CREATING, True, (Step.DELETE, Step.RECREATE)),
        (LIVE, False, (Step.UPDATE,)),
        (LIVE, True, (Step.DELETE, Step.RECREATE)),
        (DELETED, False, (Step.RECREATE,)),
        (DELETED, True, (Step.RECREATE,)),
    ],
)
def test_steps_of_an_upsert(
    state: BindingState | None, recreate: bool, expected: tuple[Step, ...]
) -> None:
    unit = WorkUnit(A, UPSERT, "primary", 2, content("x"), recreate, (1,))
    assert steps(unit, None if state is None else bound(A, 1, state)) == expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [(None, ()), (CREATING, (Step.DELETE,)), (LIVE, (Step.DELETE,)), (DELETED, ())],
)
def test_steps_of_a_cancel(state: BindingState | None, expected: tuple[Step, ...]) -> None:
    unit = WorkUnit(A, CANCEL, "primary", 2, None, False, (1,))
    assert steps(unit, None if state is None else bound(A, 1, state)) == expected


@pytest.mark.parametrize(
    "items",
    [
        [upsert(1, A, 1), upsert(1, B, 1)],
        [upsert(1, A, 1), replace(upsert(2, B, 1), account_id=UUID(int=2))],
        [replace(upsert(1, A, 1), state=ItemState.DONE)],
        [replace(upsert(1, A, 1), source=None)],
        [replace(upsert(1, A, 1), content=None)],
    ],
)
def test_plan_refuses_items_that_are_not_one_accounts_pending_queue(
    items: list[OutboxItem],
) -> None:
    with pytest.raises(ValueError):
        plan(items, {})


# -- property: random interleavings against a model of the provider ---------------------------


@dataclass
class Provider:
    """A dict model of the calendars, and of the bindings the actor keeps for its events."""

    rng: random.Random
    bindings: dict[SourceKey, Binding] = field(default_factory=dict)
    events: dict[str, tuple[SourceKey, str, EventContent | None]] = field(default_factory=dict)
    deleted_ids: set[str] = field(default_factory=set)

    def run(self, unit: WorkUnit, fail_before: int | None, lose_ack: bool) -> bool:
        """Carry out ``unit`` as the actor would; False when it failed part way."""
        todo = steps(unit, self.bindings.get(unit.source))
        for index, step in enumerate(todo):
            if index == fail_before:
                return False
            if not self._step(unit, step, lose_ack and index == len(todo) - 1):
                return False
        self._record(unit)
        return True

    def _step(self, unit: WorkUnit, step: Step, lose_ack: bool) -> bool:
        binding = self.bindings.get(unit.source)
        if step is Step.DELETE:
            assert binding is not None
            event_id = idempotency_key(binding.id, binding.generation)
            self.events.pop(event_id, None)
            self.deleted_ids.add(event_id)
            return True
        if binding is None:
            binding = Binding(
                UUID(int=self.rng.getrandbits(128)),
                ACCOUNT,
                unit.source,
                unit.calendar_id,
                0,
                CREATING,
                None,
                None,
                None,
                None,
            )
        elif step is Step.RECREATE:
            binding = self._next_generation(binding, unit)
        self.bindings[unit.source] = binding  # recorded before the call, as the store does
        event_id = idempotency_key(binding.id, binding.generation)
        gone = event_id in self.deleted_ids or (step is Step.UPDATE and event_id not in self.events)
        if gone:
            # The provider refuses a deleted id (a crash came between DELETE and RECREATE, or
            # the event was deleted since): a direct GET finds it gone, and the rules recreate.
            assert after_direct_get(UPSERT, found=False) is AfterGet.RECREATE
            binding = self.bindings[unit.source] = self._next_generation(binding, unit)
            event_id = idempotency_key(binding.id, binding.generation)
        self.events[event_id] = (unit.source, unit.calendar_id, unit.content)
        return not lose_ack

    @staticmethod
    def _next_generation(binding: Binding, unit: WorkUnit) -> Binding:
        return replace(
            binding,
            generation=binding.generation + 1,
            state=CREATING,
            calendar_id=unit.calendar_id,
            provider_event_id=None,
            etag=None,
        )

    def _record(self, unit: WorkUnit) -> None:
        binding = self.bindings.get(unit.source)
        if unit.operation is CANCEL:
            if binding is None:  # a tombstone keeps the cancel's version
                binding = Binding(
                    UUID(int=self.rng.getrandbits(128)),
                    ACCOUNT,
                    unit.source,
                    unit.calendar_id,
                    0,
                    DELETED,
                    None,
                    None,
                    unit.version,
                    None,
                )
            self.bindings[unit.source] = replace(
                binding, state=DELETED, applied_version=unit.version
            )
            return
        assert binding is not None
        event_id = idempotency_key(binding.id, binding.generation)
        self.bindings[unit.source] = replace(
            binding,
            state=LIVE,
            provider_event_id=event_id,
            etag=f'"{self.rng.random()}"',
            applied_version=unit.version,
            content=unit.content,
        )


def random_requests(rng: random.Random) -> list[OutboxItem]:
    """Upserts and cancels of a few sources with versions out of order, and some rebuilds."""
    sources = [key(f"s{n}", rng.choice(["w1", "w2"])) for n in range(rng.randint(1, 5))]
    calendars = ["primary", "team"]
    items: list[OutboxItem] = []
    for source in sources:
        home = rng.choice(calendars)
        for _ in range(rng.randint(1, 6)):
            version = rng.randint(0, 8)
            calendar = home if rng.random() < 0.8 else rng.choice(calendars)
            if rng.random() < 0.7:
                title = f"{source.source_id} v{version} #{rng.randrange(1000)}"
                items.append(upsert(0, source, version, title, calendar))
            else:
                items.append(cancel(0, source, version, calendar))
    for _ in range(rng.choice([0, 0, 1, 2])):
        items.append(rebuild(0, rng.choice(["w1", "w2"]), rng.choice(calendars)))
    rng.shuffle(items)
    return [replace(item, id=n) for n, item in enumerate(items, start=1)]


def check_coverage(items: Sequence[OutboxItem], result: Plan) -> None:
    """Every item is skipped, done, or completed by units (a rebuild by all of its scope)."""
    rebuilds = {item.id for item in items if item.operation is REBUILD}
    placed: list[int] = [*result.skipped, *result.done]
    placed += [i for unit in result.units for i in unit.completes if i not in rebuilds]
    in_units = {i for unit in result.units for i in unit.completes}
    assert sorted(placed + list(rebuilds & in_units)) == sorted(item.id for item in items)
    assert len({unit.source for unit in result.units}) == len(result.units)


def in_rebuild_scope(binding: Binding, item: OutboxItem) -> bool:
    return (
        binding.state is not DELETED
        and binding.content is not None
        and (binding.source.workspace_id, binding.calendar_id)
        == (item.workspace_id, item.calendar_id)
    )


def settle(
    pending: dict[int, OutboxItem], result: Plan, outcomes: Iterable[bool]
) -> list[WorkUnit]:
    """Drop the items the plan settled; the units that failed."""
    succeeded = {index for index, ok in enumerate(outcomes) if ok}
    for item_id in (*result.skipped, *result.done, *result.finished(succeeded)):
        del pending[item_id]
    return [unit for index, unit in enumerate(result.units) if index not in succeeded]


def run_scenario(rng: random.Random) -> None:
    requests = random_requests(rng)
    cuts = sorted(rng.sample(range(1, len(requests)), min(len(requests) - 1, rng.randint(0, 3))))
    bounds = [0, *cuts, len(requests)]
    batches = [requests[start:end] for start, end in itertools.pairwise(bounds)]
    provider = Provider(rng)
    pending: dict[int, OutboxItem] = {}
    rebuilt_from: dict[SourceKey, int] = {}  # generation when a rebuild of its scope arrived
    for round_no in range(len(batches) + 3):
        arriving = batches[round_no] if round_no < len(batches) else []
        failures_allowed = round_no < len(batches)
        for item in arriving:
            pending[item.id] = item
            if item.operation is REBUILD:
                for binding in provider.bindings.values():
                    if in_rebuild_scope(binding, item):
                        rebuilt_from.setdefault(binding.source, binding.generation)
        items = list(pending.values())
        result = plan(items, provider.bindings)
        check_coverage(items, result)
        assert plan(rng.sample(items, len(items)), dict(provider.bindings)) == result
        outcomes: list[bool] = []
        untouched: list[WorkUnit] = []
        for unit in result.units:
            roll = rng.random() if failures_allowed else 1.0
            if roll < 0.15:
                untouched.append(unit)
                outcomes.append(False)
            elif roll < 0.3:
                outcomes.append(provider.run(unit, rng.randint(1, 2), lose_ack=roll < 0.22))
            else:
                outcomes.append(provider.run(unit, None, lose_ack=False))
        settle(pending, result, outcomes)
        # Planning the leftovers again gives the same work for what was not touched.
        again = plan(list(pending.values()), provider.bindings).units
        rebuild_ids = {item.id for item in items if item.operation is REBUILD}
        for unit in untouched:
            if not rebuild_ids & set(unit.completes):
                assert unit in again
    assert pending == {}, "every item ends completed or skipped"
    check_final_state(requests, provider, rebuilt_from)


def check_final_state(
    requests: Sequence[OutboxItem], provider: Provider, rebuilt_from: Mapping[SourceKey, int]
) -> None:
    """One event per live source, at its highest version; none for cancelled ones."""
    winners: dict[SourceKey, OutboxItem] = {}
    for item in requests:
        if item.source is None:
            continue
        best = winners.get(item.source)
        if best is None or (item.version, item.id) > (best.version, best.id):
            winners[item.source] = item
    expected = {
        (source, item.calendar_id, item.content)
        for source, item in winners.items()
        if item.operation is UPSERT
    }
    assert sorted(map(repr, provider.events.values())) == sorted(map(repr, expected))
    assert not provider.events.keys() & provider.deleted_ids
    for source, generation in rebuilt_from.items():
        binding = provider.bindings[source]
        if binding.state is LIVE:
            assert binding.generation > generation, "a rebuilt event got a new generation"


def test_random_interleavings_leave_one_event_per_live_source_at_its_highest_version() -> None:
    rng = random.Random(20250307)
    for _ in range(1500):
        run_scenario(rng)


def test_planning_does_not_depend_on_input_order() -> None:
    rng = random.Random(99)
    for _ in range(300):
        items = random_requests(rng)
        bindings = by_key(*(bound(source, rng.randint(0, 5)) for source in [A, B, key("s1")]))
        expected = plan(items, bindings)
        for _ in range(3):
            shuffled = dict(rng.sample(list(bindings.items()), len(bindings)))
            assert plan(rng.sample(items, len(items)), shuffled) == expected


def test_a_long_backlog_is_planned_in_one_pass() -> None:
    items = [upsert(n + 1, key(f"s{n % 50}"), n // 50) for n in range(5000)]
    result = plan(items, {})
    assert len(result.units) == 50 and result.skipped == ()
    assert all(unit.version == 99 for unit in result.units)
    assert max(len(unit.completes) for unit in result.units) == 100
