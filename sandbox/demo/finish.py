"""The finish: stop the workload, settle the pipeline, compare, report.

Invariants:
- the workload (people and fault injector) is cancelled and awaited before anything else, and
  edits made after that are not journaled;
- settling clears every fault rule, re-connects every revoked user (once their account is
  parked), asks actors still waiting to retry after a cleared fault to sync now, and waits until
  every demo account is synced, nothing is pending (mailboxes, deadlines within the horizon,
  shard streams) and nothing moved for ``QUIET_FOR_S``; it never forces a sync of an account
  that is not retrying, so convergence still rests on push;
- it is bounded (``QUIESCE_TIMEOUT_S``); the comparison runs either way and says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from sandbox.demo.compare import compare
from sandbox.demo.journal import measure_lags
from sandbox.demo.stage import Stage
from sandbox.demo.view import LiveView, ms

QUIET_FOR_S = 2.5  # nothing pending and nothing moving for this long counts as settled
QUIESCE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What one live demo run showed."""

    accounts: int
    matched_accounts: int
    edits: int
    changes: int  # change rows committed after the workload started
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    notifications: int  # stream entries the gateway appended
    lag_samples: int = 0
    unobserved_edits: int = 0
    differences: tuple[str, ...] = ()
    faults: Mapping[str, int] = field(default_factory=dict)  # injected, by kind
    restarts: int = 0  # actor restarts (the crash fault's, and any other)
    revoked: tuple[uuid.UUID, ...] = ()  # accounts whose refresh token was revoked
    reauthorized: int = 0
    warmup_s: float = 0.0

    @property
    def all_matched(self) -> bool:
        """Whether Postgres held exactly what every emulator lists."""
        return self.matched_accounts == self.accounts


async def quiesce(stage: Stage, view: LiveView) -> bool:
    """Clear faults, re-connect revoked users, and wait until nothing is left to sync and
    nothing moves for QUIET_FOR_S."""
    deadline = time.monotonic() + QUIESCE_TIMEOUT_S
    last: tuple[int, int] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await measure_lags(stage.pool, stage.journal)
        waiting = await stage.injector.settle()
        stage.nudge_retrying()
        busy = waiting + await stage.unsettled()
        fig = await stage.gauges.figures("settling")
        now = (fig.notifications, fig.changes)
        if busy or now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_FOR_S:
            return True
        view.show(fig)
        await anyio.sleep(0.25)
    return False


async def finish(
    stage: Stage, view: LiveView, workload: tuple[asyncio.Task[None], ...], warmup_s: float
) -> DemoSummary:
    """Stop the workload, let the pipeline settle, compare, print and summarize."""
    for task in workload:
        task.cancel()
        await asyncio.wait([task])
    stage.journal.recording = False
    quiet = await quiesce(stage, view)
    await measure_lags(stage.pool, stage.journal)
    if not quiet:
        view.say(f"not settled within {QUIESCE_TIMEOUT_S:.0f}s; comparing anyway")
    fig = await stage.gauges.figures("done")
    view.show(fig, force=True)
    view.freeze()
    view.say(f"comparing {len(stage.accounts)} accounts with a fresh listing of each emulator")
    comparing = time.monotonic()
    result = await compare(stage.pool, stage.keyring, stage.clients, stage.accounts)
    view.say(f"compared in {time.monotonic() - comparing:.1f}s")
    journal, injector = stage.journal, stage.injector
    summary = DemoSummary(
        accounts=len(stage.accounts),
        matched_accounts=result.matched,
        edits=journal.edits,
        changes=fig.changes,
        lag_p50_ms=journal.percentile(0.5),
        lag_p99_ms=journal.percentile(0.99),
        notifications=fig.notifications,
        lag_samples=len(journal.lags_ms),
        unobserved_edits=len(journal.pending),
        differences=result.differences,
        faults=dict(injector.injected),
        restarts=fig.restarts,
        revoked=tuple(injector.revoked),
        reauthorized=injector.reauthorized,
        warmup_s=warmup_s,
    )
    _report(view, summary)
    return summary


def _report(view: LiveView, summary: DemoSummary) -> None:
    faults = ", ".join(f"{k} {v}" for k, v in sorted(summary.faults.items())) or "none"
    view.say(
        f"edits {summary.edits} ({summary.lag_samples} measured, {summary.unobserved_edits}"
        f" without a change row); changes {summary.changes}; notifications"
        f" {summary.notifications}; sync lag p50 {ms(summary.lag_p50_ms)}"
        f" p99 {ms(summary.lag_p99_ms)}"
    )
    view.say(
        f"faults injected: {faults}; actor restarts {summary.restarts}; revoked accounts"
        f" re-connected {summary.reauthorized}/{len(summary.revoked)}"
    )
    answer = "yes" if summary.all_matched else "NO"
    view.say(
        f"database matches the emulators: {answer}"
        f" ({summary.matched_accounts}/{summary.accounts} accounts)"
    )
    for line in summary.differences:
        view.say(f"  {line}")
