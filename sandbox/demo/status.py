"""Measurement: the running demo's figures, read from the replica, the gateway and Postgres.

Invariants:
- read-only: nothing here changes an actor, a stream or a row;
- only the demo's own accounts are counted by state; rates are over the last ``RATE_WINDOW_S``
  of samples, so a burst shows up within a second and fades within a few;
- an account's state is its actor's: restarting (backoff, circuit hold), quarantined, or what
  its status says (synced, syncing, retrying, needs_reauth, parked).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from actors.registry import ActorSnapshot
from actors.supervisor import Supervisor
from cluster.inbox import InboxStatistics
from gateway.app import GatewayStatistics
from sandbox.demo.faults import FaultInjector
from sandbox.demo.journal import EditJournal
from sandbox.demo.seeding import DemoAccount
from sandbox.demo.view import Figures
from store.db import PgPool
from supervisor.actor_table import summary_line

RATE_WINDOW_S = 2.0
_STATE_NAMES = {
    "backoff": "restarting",
    "held": "restarting",
    "quarantined": "quarantined",
    "stopping": "stopped",
    "stopped": "stopped",
}


def account_state(state: str, status: str | None) -> str:
    """The state an account is shown in, from its actor's state and status."""
    if state in _STATE_NAMES:
        return _STATE_NAMES[state]
    text = status or ""
    if "needs_reauth" in text:
        return "needs_reauth"
    if text.startswith("parked"):
        return "parked"
    if text.startswith("retry"):
        return "retrying"
    if text.startswith("syncing"):
        return "syncing"
    if text == "synced":
        return "synced"
    return "starting"


@dataclass(slots=True)
class Gauges:
    """Samples the demo's figures; ``rate`` keeps the counters' recent history."""

    pool: PgPool
    supervisor: Supervisor
    gateway: GatewayStatistics
    inbox: InboxStatistics | None
    journal: EditJournal
    injector: FaultInjector
    accounts: list[DemoAccount]
    started: float = field(default_factory=time.monotonic)
    changes_before: int = 0  # highest change id when the workload started
    _samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def snapshots(self) -> list[ActorSnapshot]:
        """The demo accounts' actors, now."""
        ids = {str(a.id) for a in self.accounts}
        registry = self.supervisor.registry
        now = asyncio.get_running_loop().time()  # the deadline heap's clock
        return [s for s in registry.snapshots(now) if s.id in ids]

    def states(self) -> Counter[str]:
        """Demo accounts by shown state; accounts without an actor yet count as starting."""
        shown = Counter(account_state(s.state, s.status) for s in self.snapshots())
        shown["starting"] += len(self.accounts) - shown.total()
        return shown

    def rates(self) -> tuple[float, float]:
        """Notifications appended and entries delivered per second, recently."""
        now = time.monotonic()
        delivered = 0 if self.inbox is None else self.inbox.delivered
        self._samples.append((now, self.gateway.appended, delivered))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return 0.0, 0.0
        return (last[1] - first[1]) / span, (last[2] - first[2]) / span

    async def figures(self, phase: str) -> Figures:
        """Everything the view shows, now."""
        row = await self.pool.fetchrow(
            "SELECT (SELECT count(*) FROM changes WHERE id > $1) AS changes,"
            " (SELECT count(*) FROM changes WHERE id > $1 AND published_at IS NOT NULL)"
            " AS published,"
            " (SELECT count(*) FROM events WHERE account_id = ANY($2::uuid[])"
            " AND status <> 'cancelled') AS events",
            self.changes_before,
            [a.id for a in self.accounts],
        )
        assert row is not None
        per_s, delivered_per_s = self.rates()
        gateway = self.gateway
        errors = {
            "edits refused": self.journal.errors,
            "gateway 503": gateway.unavailable,
            "faults not placed": self.injector.failed,
        }
        errors.update({f"gateway {why}": n for why, n in gateway.rejected.items()})
        journal = self.journal
        stats = self.supervisor.registry.statistics()
        return Figures(
            phase=phase,
            elapsed_s=time.monotonic() - self.started,
            accounts=len(self.accounts),
            states=self.states(),
            notifications=gateway.appended,
            notifications_per_s=per_s,
            delivered=0 if self.inbox is None else self.inbox.delivered,
            delivered_per_s=delivered_per_s,
            edits=journal.edits,
            lag_p50_ms=journal.percentile(0.5),
            lag_p99_ms=journal.percentile(0.99),
            lag_samples=len(journal.lags_ms),
            changes=int(row["changes"]),
            published=int(row["published"]),
            events=int(row["events"]),
            restarts=stats.restarts,
            faults=dict(self.injector.injected),
            errors={k: v for k, v in errors.items() if v},
            actor_summary=summary_line(stats),
        )
