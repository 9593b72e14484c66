"""One-for-one supervision of many independent actors, Erlang/OTP style.

Each child runs in its own task, named ``actor[<id>]``, which also runs the child's restart
loop: a crash is caught there, judged by the restart policy and followed by a backoff sleep in
that same task. A crash therefore never reaches a sibling or the supervisor's owner, and an
idle child costs one task, one cell and one future; timers are loop callbacks, never tasks.

Invariants:
- every child task is referenced by the registry until it has finished;
- a child's own cancellation (``task.cancelling() > 0``) ends it; a stray ``CancelledError``
  raised inside actor code is a crash like any other exception;
- a child that spends its own restart budget is quarantined (its siblings keep running) or,
  when its spec says so, escalates: the supervisor shuts down and its owner gets the error;
- while the restart circuit is open, crashed children wait without charging their budgets;
- shutdown asks children to stop in reverse start order, waits up to the timeout, then
  cancels the rest in reverse start order; it completes even if its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Hashable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import structlog

from actors.actor import Actor
from actors.cell import INF, ActorCell, ActorState
from actors.circuit import Circuit, CircuitPolicy
from actors.errors import (
    ActorUnavailable,
    ChildStartError,
    DuplicateChild,
    SupervisorEscalation,
)
from actors.policy import OnExhausted, RestartBudget, RestartPolicy
from actors.registry import Registry
from actors.restart_gate import RestartGate
from actors.spec import ChildSpec
from actors.wakeups import WakeupScheduler
from config.logs import log_context
from config.redact import redact_text
from metrics import events as metrics

M = TypeVar("M")

QuarantineHook = Callable[[str, str], Awaitable[None]]

log = structlog.get_logger("actors.supervisor")

_MAX_TRACEBACK_CHARS = 8000
# Handle at most this many queued messages in a row before yielding to other tasks.
_FAIRNESS_BURST = 64


class StartBatch:
    """Children started together; the starter waits on one future for all of them."""

    __slots__ = ("done", "failures", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.pending = count
        self.failures: dict[str, ChildStartError] = {}
        self.done: asyncio.Future[None] = loop.create_future()
        if count == 0:
            self.done.set_result(None)

    def settle(self, child_id: str, error: ChildStartError | None) -> None:
        """Record one child's start outcome."""
        if error is not None:
            self.failures[child_id] = error
        self.pending -= 1
        if self.pending == 0 and not self.done.done():
            self.done.set_result(None)


class Supervisor:
    """Starts, restarts, quarantines and stops children; use as an async context manager."""

    def __init__(
        self,
        *,
        name: str = "supervisor",
        policy: RestartPolicy | None = None,
        circuit: CircuitPolicy | None = None,
        mailbox_capacity: int = 1000,
        shutdown_timeout_s: float = 10.0,
        on_quarantine: QuarantineHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if mailbox_capacity < 1:
            raise ValueError("mailbox_capacity must be >= 1")
        self.name = name
        self.policy = policy or RestartPolicy()
        self.circuit_policy = circuit or CircuitPolicy()
        self.mailbox_capacity = mailbox_capacity
        self.shutdown_timeout_s = shutdown_timeout_s
        self.registry = Registry()
        self._on_quarantine = on_quarantine
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeups: WakeupScheduler | None = None
        self._restart_gate: RestartGate | None = None
        self._escalation: SupervisorEscalation | None = None
        self._closing = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = self._loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._wakeups = WakeupScheduler(loop)
        self._restart_gate = RestartGate(loop, self.circuit_policy, self._rng, self.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
        if exc is None and self._escalation is not None:
            raise self._escalation

    async def wait_closed(self) -> None:
        """Return once the supervisor has shut down; raise SupervisorEscalation if it escalated."""
        await asyncio.shield(self._closed_future())
        if self._escalation is not None:
            raise self._escalation

    @property
    def closing(self) -> bool:
        """Whether shutdown has begun."""
        return self._closing

    # -- starting --------------------------------------------------------------------------------

    async def start_child(self, child_id: str, spec: ChildSpec[M]) -> ActorCell[M]:
        """Start one child and return once its ``on_start`` succeeded (ChildStartError if not)."""
        failures = await self.start_children([child_id], spec)
        if failures:
            raise failures[child_id]
        cell = self.registry.get(child_id)
        assert cell is not None
        return cell

    async def start_children(
        self, child_ids: Iterable[str], spec: ChildSpec[M]
    ) -> dict[str, ChildStartError]:
        """Start many children of one spec; return once every ``on_start`` has finished.

        Children whose first start fails are not added; their errors are returned by id.
        """
        loop = self._running_loop()
        if self._closing:
            raise ActorUnavailable(f"{self.name} is shutting down")
        ids = list(child_ids)
        for child_id in ids:
            if child_id in self.registry:
                raise DuplicateChild(child_id)
        if len(set(ids)) != len(ids):
            raise DuplicateChild("the same id was given twice")
        batch = StartBatch(loop, len(ids))
        created_at = time.time()
        for child_id in ids:
            cell = ActorCell(child_id, spec, self, created_at)
            cell.start_batch = batch
            self.registry.add(cell)
            self._spawn(cell)
        await asyncio.shield(batch.done)
        return batch.failures

    def get(self, child_id: str) -> ActorCell[Any] | None:
        """The cell of ``child_id``, or None."""
        return self.registry.get(child_id)

    def send_nowait(self, child_id: str, message: Any) -> None:
        """Deliver ``message`` to a child's mailbox; raises MailboxFull or ActorUnavailable."""
        self._cell(child_id).send_nowait(message)

    def post_nowait(self, child_id: str, key: Hashable, item: object = None) -> None:
        """Post to a child, coalescing by ``key``; raises ActorUnavailable."""
        self._cell(child_id).post_nowait(key, item)

    def _cell(self, child_id: str) -> ActorCell[Any]:
        cell = self.registry.get(child_id)
        if cell is None:
            raise ActorUnavailable(f"no actor {child_id}")
        return cell

    # -- operator actions --------------------------------------------------------------------------

    async def stop_child(self, child_id: str, timeout_s: float | None = None) -> None:
        """Stop one child (ask, wait, then cancel) and forget it."""
        cell = self.registry.get(child_id)
        if cell is None:
            return
        await self._stop_cells([cell], self.shutdown_timeout_s if timeout_s is None else timeout_s)
        self.registry.remove(cell)

    async def stop_children(self, child_ids: Iterable[str], timeout_s: float | None = None) -> None:
        """Stop many children at once (ask all, wait, then cancel the rest) and forget them."""
        cells = [c for c in map(self.registry.get, child_ids) if c is not None]
        if not cells:
            return
        await self._stop_cells(cells, self.shutdown_timeout_s if timeout_s is None else timeout_s)
        for cell in cells:
            self.registry.remove(cell)

    async def release(self, child_id: str) -> ActorCell[Any]:
        """Restart a quarantined child with a fresh budget; return once it started."""
        cell = self.registry.get(child_id)
        if cell is None or cell.state is not ActorState.QUARANTINED:
            raise ActorUnavailable(f"actor {child_id} is not quarantined")
        self.registry.remove(cell)
        try:
            return await self.start_child(child_id, cell.spec)
        except ChildStartError:
            self.registry.add(cell)  # still quarantined, still visible
            raise

    async def restart_child(self, child_id: str) -> ActorCell[Any]:
        """Stop one child and start it again from its spec (fresh state and budget)."""
        cell = self._cell(child_id)
        await self.stop_child(child_id)
        return await self.start_child(child_id, cell.spec)

    async def quarantine_child(self, child_id: str, reason: str) -> ActorCell[Any]:
        """Stop one child and park it as quarantined (the quarantine hook runs) until released."""
        cell = self._cell(child_id)
        if cell.state is not ActorState.QUARANTINED:
            await self._stop_cells([cell], self.shutdown_timeout_s)
            self._finish(cell, ActorState.QUARANTINED)
            cell.status = reason
            await self._quarantined(cell, reason)
        return cell

    # -- shutdown ----------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every child; safe to call twice, and finishes even if the caller is cancelled."""
        self._running_loop()
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_task = asyncio.get_running_loop().create_task(
                self._shutdown(), name=f"{self.name}.shutdown"
            )
        task = self._shutdown_task
        cancelled = False
        while not task.done():
            try:
                # Shielded from an owner's anyio cancel scope too, which would otherwise
                # re-deliver its cancellation at every await.
                with anyio.CancelScope(shield=True):
                    await asyncio.shield(task)
            except asyncio.CancelledError:
                # Leaving now would orphan children; the shutdown is bounded by its timeouts.
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    async def _shutdown(self) -> None:
        self._gate().close()
        await self._stop_cells(self.registry.reversed(), self.shutdown_timeout_s)
        for cell in self.registry.reversed():
            self.registry.remove(cell)
        closed = self._closed_future()
        if not closed.done():
            closed.set_result(None)

    async def _stop_cells(self, cells: list[ActorCell[Any]], timeout_s: float) -> None:
        """Ask in the given order, wait up to the timeout, then cancel in the same order."""
        for cell in cells:
            cell.request_stop()
        tasks = [c.task for c in cells if c.task is not None and not c.task.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if not pending:
            return
        stubborn = [t for t in tasks if t in pending]
        for task in stubborn:
            task.cancel(msg=f"{self.name} shutdown")
        _, still = await asyncio.wait(stubborn, timeout=timeout_s)
        for task in still:
            log.error("actor ignored cancellation; abandoning it", task=task.get_name())

    # -- the child's task ----------------------------------------------------------------------

    def _spawn(self, cell: ActorCell[Any]) -> None:
        loop = self._running_loop()
        cell.task = loop.create_task(self._child_main(cell), name=f"actor[{cell.id}]")

    async def _child_main(self, cell: ActorCell[Any]) -> None:  # noqa: PLR0915
        """The child's whole life: (re)start, serve, and decide what follows each exit.

        Written as one coroutine on purpose: every nested coroutine a waiting child sits in
        costs a frame, and idle children are the ones we have by the ten thousand.
        """
        log_context.set(cell)
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                crash: BaseException | None = None
                actor: Actor[Any] | None = None
                try:
                    # -- one incarnation: a fresh actor, rebuilt from storage by on_start.
                    cell.state = ActorState.STARTING
                    cell.exit_requested = False
                    cell.clear_deadlines()
                    actor = cell.spec.factory(cell.id)
                    actor._cell = cell
                    cell.actor = actor
                    await actor.on_start()
                    self._started(cell)
                    burst = 0
                    while not (cell.stop_requested or cell.exit_requested):
                        wake_at = cell.wake_at
                        if wake_at != INF and wake_at <= loop.time():
                            name = cell.pop_due_deadline(loop.time())
                            if name is not None:
                                cell.state = ActorState.BUSY
                                await actor.on_deadline(name)
                                cell.last_activity = time.time()
                                continue
                        mailbox = cell.mailbox
                        if mailbox:
                            message = mailbox.popleft()
                            if not mailbox:
                                cell.mailbox = None  # an idle actor keeps no deque
                            cell.state = ActorState.BUSY
                            await actor.on_message(message)
                            cell.last_activity = time.time()
                            burst += 1
                            if burst >= _FAIRNESS_BURST:
                                burst = 0
                                await asyncio.sleep(0)
                            continue
                        if cell.posts:
                            taken = cell.take_posts_nowait()
                            assert taken is not None
                            cell.state = ActorState.BUSY
                            await actor.on_posts(*taken)
                            cell.last_activity = time.time()
                            continue
                        burst = 0
                        cell.state = ActorState.IDLE
                        waiter = cell.waiter = loop.create_future()
                        try:
                            await waiter
                        finally:
                            cell.waiter = None
                    cell.state = ActorState.STOPPING
                    await actor.on_stop()
                except asyncio.CancelledError as exc:
                    if task.cancelling():
                        raise
                    crash = exc  # raised inside actor code, not a cancellation of this child
                except Exception as exc:
                    crash = exc
                finally:
                    cell.actor = actor = None
                if crash is None and cell.stop_requested:
                    self._finish(cell, ActorState.STOPPED)
                    return
                if crash is not None:
                    self._record_crash(cell, crash)
                if not self._plan_restart(cell, loop.time(), crashed=crash is not None):
                    if cell.state is ActorState.QUARANTINED:
                        await self._quarantined(cell)
                    return
                # -- backoff or circuit hold: woken by the deadline heap, a release or a stop.
                try:
                    while loop.time() < cell.wake_at and not cell.stop_requested:
                        waiter = cell.waiter = loop.create_future()
                        try:
                            await waiter
                        finally:
                            cell.waiter = None
                finally:
                    self._gate().forget(cell)
                if cell.stop_requested:
                    self._finish(cell, ActorState.STOPPED)
                    return
                cell.restarts += 1
                metrics.actor_restarts.labels(cell.spec.kind).inc()
        except asyncio.CancelledError:
            self._cancelled(cell)
            raise
        except BaseException as exc:  # a bug in this module: never let it pass silently
            log.critical("supervision loop failed", actor=cell.id, exc_info=exc)
            self._finish(cell, ActorState.STOPPED, forget=True)
            self._escalate(SupervisorEscalation(cell.id, repr(exc)))

    def _started(self, cell: ActorCell[Any]) -> None:
        batch = cell.start_batch
        if batch is not None:
            cell.start_batch = None
            batch.settle(cell.id, None)
        self._gate().started(cell)

    def _record_crash(self, cell: ActorCell[Any], crash: BaseException) -> None:
        # Redacted here, once: the monitor, the API and accounts.last_error all show these.
        cell.last_error = redact_text(f"{type(crash).__name__}: {crash}")[:500]
        tb = "".join(traceback.format_exception(crash))
        cell.last_traceback = redact_text(tb[-_MAX_TRACEBACK_CHARS:])
        cell.last_activity = time.time()
        cell.remember_error(cell.last_activity)
        # A warning: the restart policy handles it; quarantine and escalation log as errors.
        log.warning("actor crashed", actor=cell.id, kind=cell.spec.kind, exc_info=crash)

    def _plan_restart(self, cell: ActorCell[Any], now: float, *, crashed: bool) -> bool:
        """After an exit: arm the backoff or the circuit hold; False when the child is done."""
        batch = cell.start_batch
        if batch is not None:  # the first start failed: the starter gets the error
            cell.start_batch = None
            batch.settle(cell.id, ChildStartError(f"{cell.id}: {cell.last_error}"))
            self._finish(cell, ActorState.STOPPED, forget=True)
            return False
        if self._closing or not self.policy.should_restart(cell.spec.restart, crashed=crashed):
            self._finish(cell, ActorState.STOPPED, forget=True)
            return False
        if crashed and self._gate().hold_after_crash(cell, now, len(self.registry)):
            cell.state = ActorState.HELD
            cell.clear_deadlines()
            return True
        budget = cell.budget
        if budget is None:
            budget = cell.budget = RestartBudget()
        attempt = budget.record_failure(now, self.policy)
        if attempt is None:
            if cell.spec.on_exhausted is OnExhausted.ESCALATE:
                self._finish(cell, ActorState.STOPPED, forget=True)
                self._escalate(SupervisorEscalation(cell.id, cell.last_error or "exited too often"))
                return False
            self._finish(cell, ActorState.QUARANTINED)
            return False
        cell.state = ActorState.BACKOFF
        cell.clear_deadlines()
        cell.set_wake_at(now + self.policy.backoff_s(attempt, self._rng))
        return True

    async def _quarantined(self, cell: ActorCell[Any], reason: str | None = None) -> None:
        reason = reason or cell.last_error or "exited too often"
        log.error(
            "actor quarantined",
            actor=cell.id,
            kind=cell.spec.kind,
            reason=reason,
            exception=cell.last_traceback,  # rendered like a logged exception
        )
        if self._on_quarantine is not None:
            try:
                await self._on_quarantine(cell.id, reason)
            except Exception as exc:  # the actor stays parked either way
                log.error("quarantine hook failed", actor=cell.id, exc_info=exc)

    def _escalate(self, error: SupervisorEscalation) -> None:
        if self._escalation is None:
            self._escalation = error
            log.critical("supervisor escalates", supervisor=self.name, child=error.child_id)
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_task = self._running_loop().create_task(
                self._shutdown(), name=f"{self.name}.shutdown"
            )

    def _cancelled(self, cell: ActorCell[Any]) -> None:
        """The child's task was cancelled: by us when stopping it, or by someone else."""
        if not cell.stop_requested:
            # Someone outside the supervisor (an operator's cancel, a stray task.cancel()) ended
            # the child; it honours that, parks as stopped and says so.
            cell.last_error = "task cancelled from outside its supervisor"
            log.warning("actor task cancelled from outside its supervisor", actor=cell.id)
        self._finish(cell, ActorState.STOPPED)

    def _finish(self, cell: ActorCell[Any], state: ActorState, *, forget: bool = False) -> None:
        cell.state = state
        cell.mailbox = cell.posts = None
        cell.clear_deadlines()
        if forget:
            self.registry.remove(cell)

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def circuit(self) -> Circuit:
        """The restart circuit (read-only use: tests, metrics, the monitor)."""
        return self._gate().circuit

    def schedule_wake(self, cell: ActorCell[Any], at: float) -> None:
        """Wake ``cell`` at loop time ``at`` (the cell calls this for an earlier wake)."""
        if self._wakeups is None:
            raise RuntimeError(f"{self.name} is used outside 'async with'")
        self._wakeups.schedule(cell, at)

    def _gate(self) -> RestartGate:
        if self._restart_gate is None:
            raise RuntimeError(f"{self.name} is used outside 'async with'")
        return self._restart_gate

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.name} is used outside 'async with'")
        return self._loop

    def _closed_future(self) -> asyncio.Future[None]:
        if self._closed is None:
            raise RuntimeError(f"{self.name} is used outside 'async with'")
        return self._closed
