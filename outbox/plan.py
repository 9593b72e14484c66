"""Planning an account's pending outbox items into provider work. Pure: no I/O, no clock.

``plan(items, bindings)`` turns pending items into at most one ``WorkUnit`` per source, plus the
ids to mark SKIPPED (stale) or DONE (nothing to do) at once. ``bindings`` holds the binding of
every source the items name and every binding of each workspace + calendar that a pending
REBUILD_ALL names; a missing binding means the source has none.

Per source, walking its items in id order (the queue's order):
- stale: an item whose version is below the binding's ``applied_version`` or below an item of
  the source queued before it is SKIPPED and never written;
- merge: every other item is superseded by the next one, so the last of them (the "head") is
  what the provider must end up with; its unit completes them all. Equal versions: the later
  item wins. Upserts then cancel: one cancel. Cancel then upsert: the upsert, an update in place
  while the event still exists (the cancel never reached the provider), else a recreation; that
  update ``overwrite``s whatever the user changed, as the cancel would have deleted it
  (``outbox.rules.on_conflict``), so merging never changes what the provider ends up with;
- ``applied_version`` is read as the version of the last item applied to the source, a cancel
  included: a cancelled source keeps a deleted binding as a tombstone of its version.

REBUILD_ALL(workspace, calendar) is a barrier. Its scope: every binding of that workspace and
calendar that is not deleted and holds applied content, and every source with a non-stale item
for that workspace and calendar queued before the barrier. Each source in scope gets one unit
that deletes its event and creates it anew (``recreate``) from its head, or from the binding's
content when no item of it is pending; a head that is a cancel just deletes. This is what running
the items before the barrier, then the rebuild, then the items after it would leave, with fewer
calls. Sources with items after the barrier only are not rebuilt.

Invariants (tested in tests/unit/test_outbox_plan.py):
- deterministic: the plan depends on the contents of ``items`` and ``bindings``, never on their
  iteration order;
- at most one unit per source; a unit's ``completes`` is ascending and never empty;
- every item id lands in exactly one of ``skipped``, ``done`` or the ``completes`` of one unit,
  except a REBUILD_ALL id, which is in the ``completes`` of every unit of its scope (DONE once
  they all succeeded: ``Plan.finished``) or, with an empty scope, in ``done``;
- a unit's version is at least the binding's ``applied_version`` and the version of every
  upsert or cancel it completes;
- units are ordered by the lowest item id they complete, then by source: oldest work first, and
  within a workspace + calendar the order of its barriers;
- planning again the items of a unit that failed before any call, with the same bindings,
  gives the same unit (a REBUILD_ALL, still pending, rebuilds its whole scope again).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from outbox.model import (
    Binding,
    BindingState,
    EventContent,
    ItemState,
    Operation,
    OutboxItem,
    SourceKey,
)

Scope = tuple[str, str]  # (workspace id, calendar id) of a REBUILD_ALL


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One source's provider work; on success its ``completes`` items are DONE."""

    source: SourceKey
    operation: Operation  # UPSERT_EVENT or CANCEL_EVENT
    calendar_id: str  # upsert: where the event must be; cancel: where it is deleted from
    version: int  # record as the binding's applied_version on success
    content: EventContent | None  # UPSERT_EVENT only
    recreate: bool  # delete the bound event (if any), then create it with generation + 1
    completes: tuple[int, ...]  # item ids, ascending
    # A cancel folded into this upsert already withdrew the event and any user edit of it:
    # write without the account's conflict policy.
    overwrite: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """The work for a batch of pending items, and the items settled without any call."""

    units: tuple[WorkUnit, ...]
    skipped: tuple[int, ...]  # stale: mark SKIPPED now
    done: tuple[int, ...]  # nothing to write (a REBUILD_ALL with an empty scope): DONE now

    def finished(self, succeeded: Collection[int]) -> tuple[int, ...]:
        """Ids of items every unit of which succeeded, given the indices of those units."""
        pending = {
            item
            for index, unit in enumerate(self.units)
            if index not in succeeded
            for item in unit.completes
        }
        return tuple(
            sorted(
                {
                    item
                    for index in succeeded
                    for item in self.units[index].completes
                    if item not in pending
                }
            )
        )


class Step(enum.Enum):
    """One provider call of a unit, as ``steps`` orders them."""

    CREATE = "create"  # create under the binding's (id, generation): a new one, or a retry
    RECREATE = "recreate"  # generation + 1 (and the unit's calendar), then create
    UPDATE = "update"  # conditional update on the binding's etag
    DELETE = "delete"  # delete the bound event; 404/410 means it is already gone: fine


def steps(unit: WorkUnit, binding: Binding | None) -> tuple[Step, ...]:
    """The provider calls that take ``binding`` to what ``unit`` asks for.

    Between DELETE and RECREATE the binding must go straight to its next generation (creating,
    content kept), never to deleted: a unit that fails in between is then planned again.
    An empty tuple still needs the unit's outcome recorded (a cancel's tombstone version).
    """
    has_event = binding is not None and binding.state is not BindingState.DELETED
    if unit.operation is Operation.CANCEL_EVENT:
        return (Step.DELETE,) if has_event else ()
    if binding is None:
        return (Step.CREATE,)
    if binding.state is BindingState.DELETED:
        return (Step.RECREATE,)  # Google never reuses a deleted event's id
    if unit.recreate:
        return (Step.DELETE, Step.RECREATE)
    if binding.state is BindingState.CREATING:
        return (Step.CREATE,)  # the last create's outcome is unknown: same id, no duplicate
    return (Step.UPDATE,)


def plan(items: Sequence[OutboxItem], bindings: Mapping[SourceKey, Binding]) -> Plan:
    """The work, stale items and settled items of one account's pending ``items``."""
    ordered = _checked(items)
    barriers: dict[Scope, list[int]] = {}
    by_source: dict[SourceKey, list[OutboxItem]] = {}
    for item in ordered:
        if item.operation is Operation.REBUILD_ALL:
            barriers.setdefault((item.workspace_id, item.calendar_id), []).append(item.id)
        elif item.source is not None:
            by_source.setdefault(item.source, []).append(item)
    rebuilt = {source for source, binding in bindings.items() if _scope_of(binding, barriers)}
    units: list[WorkUnit] = []
    skipped: list[int] = []
    for source in sorted(by_source.keys() | rebuilt, key=_source_order):
        binding = bindings.get(source)
        unit, stale = _plan_source(source, by_source.get(source, []), binding, barriers)
        skipped.extend(stale)
        if unit is not None:
            units.append(unit)
    units.sort(key=lambda unit: (unit.completes[0], _source_order(unit.source)))
    covered = {item for unit in units for item in unit.completes}
    done = sorted(item for ids in barriers.values() for item in ids if item not in covered)
    return Plan(tuple(units), tuple(sorted(skipped)), tuple(done))


def _checked(items: Sequence[OutboxItem]) -> list[OutboxItem]:
    """``items`` in id order, refused when they cannot come from one account's pending queue."""
    ordered = sorted(items, key=lambda item: item.id)
    if len({item.id for item in ordered}) != len(ordered):
        raise ValueError("duplicate item ids")
    if len({item.account_id for item in ordered}) > 1:
        raise ValueError("items of several accounts")
    for item in ordered:
        if item.state is not ItemState.PENDING:
            raise ValueError(f"item {item.id} is {item.state.value}, not pending")
        if item.operation is not Operation.REBUILD_ALL and item.source is None:
            raise ValueError(f"item {item.id} has no source")
        if item.operation is Operation.UPSERT_EVENT and item.content is None:
            raise ValueError(f"upsert {item.id} has no content")
    return ordered


def _source_order(source: SourceKey) -> tuple[str, str, str, str]:
    return (source.workspace_id, source.source_type, source.source_id, source.event_type)


def _scope_of(binding: Binding, barriers: Mapping[Scope, list[int]]) -> list[int]:
    """Ids of the REBUILD_ALLs that recreate ``binding`` as it stands (none: not in scope)."""
    if binding.state is BindingState.DELETED or binding.content is None:
        return []  # no event to rebuild, or nothing to rebuild it from
    if binding.applied_version is None:
        return []
    return barriers.get((binding.source.workspace_id, binding.calendar_id), [])


def _split_stale(
    items: Iterable[OutboxItem], applied: int | None
) -> tuple[list[OutboxItem], list[int]]:
    """The live items of one source (id order) and the ids of its stale ones."""
    live: list[OutboxItem] = []
    stale: list[int] = []
    for item in items:
        floor = live[-1].version if live else applied
        if floor is not None and item.version < floor:
            stale.append(item.id)
        else:
            live.append(item)  # versions never go down along ``live``
    return live, stale


def _plan_source(
    source: SourceKey,
    items: Sequence[OutboxItem],
    binding: Binding | None,
    barriers: Mapping[Scope, list[int]],
) -> tuple[WorkUnit | None, list[int]]:
    """One source's unit (None: nothing to write) and its stale item ids."""
    live, stale = _split_stale(items, None if binding is None else binding.applied_version)
    rebuilds = set(_scope_of(binding, barriers)) if binding is not None else set()
    for item in live:
        # A later item of the source is folded into the rebuild; only earlier ones bring the
        # source into a scope its binding is not (yet) in.
        scope = barriers.get((item.workspace_id, item.calendar_id), [])
        rebuilds.update(barrier for barrier in scope if barrier > item.id)
    completes = tuple(sorted({item.id for item in live} | rebuilds))
    if not live:
        if binding is None or not rebuilds or binding.content is None:
            return None, stale
        assert binding.applied_version is not None  # _scope_of checked it
        unit = WorkUnit(
            source,
            Operation.UPSERT_EVENT,
            binding.calendar_id,
            binding.applied_version,
            binding.content,
            recreate=True,
            completes=completes,
        )
        return unit, stale
    head = live[-1]
    if head.operation is Operation.CANCEL_EVENT:
        calendar = head.calendar_id if binding is None else binding.calendar_id
        unit = WorkUnit(source, head.operation, calendar, head.version, None, False, completes)
        return unit, stale
    moving = (
        binding is not None
        and binding.state is not BindingState.DELETED
        and binding.calendar_id != head.calendar_id
    )
    recreate = bool(rebuilds) or moving
    withdrawn = any(item.operation is Operation.CANCEL_EVENT for item in live)
    unit = WorkUnit(
        source,
        head.operation,
        head.calendar_id,
        head.version,
        head.content,
        recreate,
        completes,
        overwrite=withdrawn,
    )
    return unit, stale
