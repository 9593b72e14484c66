"""Holds crashed children while the restart circuit is open, and lets them back out.

The I/O edge of ``Circuit``: it owns the ordered set of held children and the one loop timer
that moves the circuit to half-open and fails probes that take too long.

Invariants:
- a held child waits with ``wake_at = inf``: only this gate (or a stop) wakes it;
- in half-open, up to ``probes`` held children restart; the first that starts closes the
  circuit and every held child is released, spread over ``release_spread_s``;
- a probe that neither starts nor fails within the cooldown counts as failed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog

from actors.cell import ActorCell
from actors.circuit import Circuit, CircuitPolicy

log = structlog.get_logger("actors.restart_gate")


class RestartGate:
    """Decides, per crash, whether a child restarts now or waits for the circuit."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        policy: CircuitPolicy,
        rng: random.Random,
        name: str,
    ) -> None:
        self.circuit = Circuit(policy)
        self._loop = loop
        self._rng = rng
        self._name = name
        self._held: dict[ActorCell[Any], None] = {}  # ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def held(self) -> int:
        """How many children wait for the circuit."""
        return len(self._held)

    def hold_after_crash(self, cell: ActorCell[Any], now: float, population: int) -> bool:
        """Count the crash; True when the child must wait (it is then held, uncharged)."""
        circuit = self.circuit
        if cell.probe:
            cell.probe = False
            circuit.probe_failed(now)
            self._arm(circuit.half_open_at, self._half_open)
        elif circuit.record_failure(now, population):
            log.warning(
                "restart circuit opened: many actors failing together; pausing restarts",
                supervisor=self._name,
                cooldown_s=circuit.cooldown_s,
            )
            self._arm(circuit.half_open_at, self._half_open)
        if not circuit.holding:
            return False
        self._held[cell] = None
        return True

    def forget(self, cell: ActorCell[Any]) -> None:
        """The child left the hold (released, probing or stopped)."""
        self._held.pop(cell, None)

    def started(self, cell: ActorCell[Any]) -> None:
        """A child's on_start succeeded; if it was a probe, the circuit closes."""
        if not cell.probe:
            return
        cell.probe = False
        if self.circuit.probe_succeeded():
            log.info("restart circuit closed", supervisor=self._name, held=len(self._held))
            self._cancel_timer()
            now = self._loop.time()
            spread = self.circuit.policy.release_spread_s
            for held in self._held:
                held.set_wake_at(now + self._rng.uniform(0, spread))

    def close(self) -> None:
        """Stop all timers; held children are stopped by the supervisor."""
        self._closed = True
        self._cancel_timer()

    def _arm(self, at: float, callback: Any) -> None:
        self._cancel_timer()
        if not self._closed:
            self._timer = self._loop.call_at(at, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _half_open(self) -> None:
        self._timer = None
        now = self._loop.time()
        if not self.circuit.half_open(now):
            return
        if not self._held:
            self.circuit.probe_succeeded()
            return
        for cell in list(self._held)[: self.circuit.policy.probes]:
            cell.probe = True
            cell.set_wake_at(now)
            cell.wake()
        self._arm(now + self.circuit.cooldown_s, self._probe_timed_out)

    def _probe_timed_out(self) -> None:
        self._timer = None
        if self.circuit.holding:
            self.circuit.probe_failed(self._loop.time())
            self._arm(self.circuit.half_open_at, self._half_open)
