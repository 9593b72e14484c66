"""Gauges of current state, computed at scrape time from snapshots (no bookkeeping between
scrapes, so they cannot drift from the state they describe).

Invariants:
- ``collect`` only reads what its snapshot function returns: it never awaits, queries or
  blocks (a scrape renders on the event loop);
- every actor state is exported, zero included, so a series never vanishes mid-graph;
- the outbox figures come from ``OutboxCounts``, refreshed by the scrape handler before it
  renders; absent (never read yet, or the database failed) they are left out, not zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from actors.cell import ActorState
from metrics.events import PREFIX

ACTOR_STATES = tuple(state.value for state in ActorState)


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """Outbox items by state, and the age of the oldest pending one (None: none pending)."""

    by_state: Mapping[str, int]
    oldest_pending_age_s: float | None


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What one replica's gauges show, read at scrape time."""

    actors_by_state: Mapping[str, int]
    mailbox_depth: int
    shards_owned: int
    outbox: OutboxCounts | None = None


class ReplicaCollector(Collector):
    """The replica's state gauges from ``snapshot()``."""

    def __init__(self, snapshot: Callable[[], ReplicaState]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering must not take a snapshot (the replica may not run yet)."""
        return ()

    def collect(self) -> Iterable[Metric]:
        """Render the current snapshot."""
        state = self._snapshot()
        actors = GaugeMetricFamily(
            f"{PREFIX}actors", "Supervised actors by lifecycle state.", labels=["state"]
        )
        known = set(ACTOR_STATES)
        for name in ACTOR_STATES + tuple(s for s in state.actors_by_state if s not in known):
            actors.add_metric([name], state.actors_by_state.get(name, 0))
        yield actors
        yield GaugeMetricFamily(
            f"{PREFIX}mailbox_depth",
            "Messages waiting in every actor's mailbox together.",
            value=state.mailbox_depth,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}shards_owned",
            "Shards whose actors run on this replica (lease held and epoch taken).",
            value=state.shards_owned,
        )
        if state.outbox is not None:
            items = GaugeMetricFamily(
                f"{PREFIX}outbox_items",
                "Outbox items by state (pending, dead_letter, done, skipped), every account.",
                labels=["state"],
            )
            for name, count in sorted(state.outbox.by_state.items()):
                items.add_metric([name], count)
            yield items
            age = state.outbox.oldest_pending_age_s
            yield GaugeMetricFamily(
                f"{PREFIX}outbox_oldest_pending_age_seconds",
                "Age of the oldest pending outbox item (0 when none is pending).",
                value=0.0 if age is None else age,
            )


def combined(*collectors: Collector) -> Collector:
    """One collector yielding every metric of ``collectors`` (the process registry and a
    server's own), so one exposition holds both."""
    return _Combined(collectors)


class _Combined(Collector):
    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = tuple(collectors)

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()
