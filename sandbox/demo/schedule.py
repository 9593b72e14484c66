"""The fault schedule (pure): which fault the demo injects when, given a seed.

Invariants:
- deterministic: the same seed, rate and kinds give the same schedule, so a test can rely on
  every kind firing;
- every run of ``len(kinds)`` consecutive faults holds each kind exactly once (a shuffled
  round), so each kind fires early and as often as the others;
- times only grow, and the gap between two faults is uniform in [0.5, 1.5] / ``per_s``: bounded,
  so a fault is never left waiting for minutes; ``per_s <= 0`` is an empty schedule.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["throttled", "server_error", "sync_token_expired", "revoked", "crash"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "throttled",  # 429 with Retry-After from the emulator
    "server_error",  # a 5xx from the emulator
    "sync_token_expired",  # 410 on the next incremental sync: a mark-and-sweep full round
    "revoked",  # the user's refresh token is revoked: needs_reauth until they re-connect
    "crash",  # the actor's Postgres connection is terminated mid-sync: a real crash
)


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault: when (seconds after the workload started), what, and a target chooser."""

    at_s: float
    kind: FaultKind
    pick: int  # picks the target among the eligible ones: ``pick % len(eligible)``


def fault_schedule(
    seed: int, per_s: float, kinds: Sequence[FaultKind] = FAULT_KINDS
) -> Iterator[PlannedFault]:
    """The endless schedule of faults at ``per_s`` faults a second on average."""
    if per_s <= 0 or not kinds:
        return
    rng = random.Random(seed)
    at = 0.0
    while True:
        round_ = list(kinds)
        rng.shuffle(round_)
        for kind in round_:
            at += rng.uniform(0.5, 1.5) / per_s
            yield PlannedFault(at, kind, rng.randrange(1 << 30))
