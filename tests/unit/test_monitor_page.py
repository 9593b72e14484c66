"""``Registry.page``: filter, order and page the cells, snapshotting only the rows shown. Pure:
cells built by hand, no loop."""

from __future__ import annotations

from typing import Any

import pytest

import actors.registry
from actors.actor import Actor
from actors.cell import INF, ActorCell, ActorState
from actors.registry import SORT_KEYS, ActorSnapshot, Registry
from actors.spec import ChildSpec
from supervisor.actor_table import COLUMNS

SPEC: ChildSpec[object] = ChildSpec(lambda _id: Actor(), kind="account")


class Host:
    """A cell's supervisor, as far as a cell without a task needs one."""

    mailbox_capacity = 10

    def schedule_wake(self, cell: ActorCell[Any], at: float) -> None:
        """Nothing runs: wake-ups are never due."""


def registry_of(count: int) -> Registry:
    """``count`` cells c00000, c00001...: every third busy, restarts and providers varied."""
    registry, host = Registry(), Host()
    for i in range(count):
        cell: ActorCell[object] = ActorCell(f"c{i:05d}", SPEC, host, created_at=1000.0 + i)
        cell.state = ActorState.BUSY if i % 3 == 0 else ActorState.IDLE
        cell.restarts = i % 7
        registry.add(cell)
    return registry


def test_every_table_column_can_order_the_page() -> None:
    assert set(COLUMNS) <= set(SORT_KEYS)
    registry = registry_of(30)
    for column in COLUMNS:
        assert len(registry.page(0.0, sort=column, limit=5).snapshots) == 5


def test_pages_follow_start_order_and_count_every_match() -> None:
    registry = registry_of(120)
    first = registry.page(0.0, limit=50)
    third = registry.page(0.0, offset=100, limit=50)
    assert first.matched == third.matched == 120
    assert [s.id for s in first.snapshots] == [f"c{i:05d}" for i in range(50)]
    assert [s.id for s in third.snapshots] == [f"c{i:05d}" for i in range(100, 120)]
    newest = registry.page(0.0, reverse=True, limit=2)
    assert [s.id for s in newest.snapshots] == ["c00119", "c00118"]
    assert registry.page(0.0, offset=500, limit=50).snapshots == []


def test_filter_by_state_then_sort_by_a_column_both_ways() -> None:
    registry = registry_of(30)
    busy = frozenset({ActorState.BUSY})
    page = registry.page(0.0, states=busy, sort="restarts", reverse=True, limit=3)
    assert page.matched == 10
    assert all(s.state == "busy" for s in page.snapshots)
    # Busy cells are i = 0, 3, ..., 27; restarts i % 7, highest first, start order among ties.
    assert [(s.id, s.restarts) for s in page.snapshots] == [
        ("c00006", 6),
        ("c00027", 6),
        ("c00012", 5),
    ]
    lowest = registry.page(0.0, states=busy, sort="restarts", limit=2)
    assert [(s.id, s.restarts) for s in lowest.snapshots] == [("c00000", 0), ("c00021", 0)]


def test_provider_last_sync_and_next_deadline_order_what_the_actor_described() -> None:
    registry = registry_of(4)
    cells = list(registry)
    cells[0].describe(provider="microsoft", last_sync_at=500.0)
    cells[1].describe(provider="google", last_sync_at=900.0)
    cells[2].describe(provider="google")  # never synced yet
    cells[1].set_deadline("poll", 30.0)
    cells[3].set_deadline("poll", 10.0)

    def order(column: str, *, reverse: bool = False) -> list[str]:
        return [s.id for s in registry.page(0.0, sort=column, reverse=reverse).snapshots]

    assert order("provider") == ["c00003", "c00001", "c00002", "c00000"]
    assert order("last-sync") == ["c00002", "c00003", "c00000", "c00001"]  # never synced first
    assert order("last-sync", reverse=True)[0] == "c00001"
    assert order("next") == ["c00003", "c00001", "c00000", "c00002"]  # nothing due: last
    snap = registry.page(0.0, sort="next", limit=1).snapshots[0]
    assert (snap.next_wake_in_s, snap.provider) == (10.0, None)
    assert cells[0].wake_at == INF


def test_a_page_of_50_out_of_50000_actors_takes_50_snapshots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = registry_of(50_000)
    taken: list[str] = []
    real = actors.registry.snapshot_of

    def counting(cell: ActorCell[Any], now: float) -> ActorSnapshot:
        taken.append(cell.id)
        return real(cell, now)

    monkeypatch.setattr(actors.registry, "snapshot_of", counting)
    page = registry.page(0.0, sort="restarts", reverse=True, offset=50, limit=50)
    assert page.matched == 50_000
    assert len(page.snapshots) == 50 and taken == [s.id for s in page.snapshots]
    assert {s.restarts for s in page.snapshots} == {6}
    idle = registry.page(0.0, states=frozenset({ActorState.IDLE}), sort="state", limit=50)
    assert idle.matched == 33_333 and len(taken) == 100
