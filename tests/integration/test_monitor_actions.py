"""What the monitor's actions ask of the supervisor: a bounded ring of recent crashes per cell,
an operator's restart and quarantine (through the quarantine hook), then release. Fake clock."""

from __future__ import annotations

import asyncio
import io
import socket

import pytest

from actors.actor import Actor
from actors.cell import RECENT_ERRORS, ActorState
from actors.errors import ActorUnavailable
from actors.policy import RestartPolicy
from actors.spec import ChildSpec
from actors.supervisor import Supervisor
from supervisor.monitor import ports_in_use, start_monitor

pytestmark = pytest.mark.looptime

POLICY = RestartPolicy(max_restarts=20, period_s=60.0, backoff_initial_s=1.0, backoff_max_s=1.0)


class Crasher(Actor[str]):
    """Crashes on ``crash:<n>``; counts its starts."""

    __slots__ = ("starts",)

    def __init__(self, starts: list[str]) -> None:
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.append(self.id)

    async def on_message(self, message: str) -> None:
        raise RuntimeError(message)


async def restarted(supervisor: Supervisor, child_id: str, restarts: int) -> None:
    """Let the child crash and come back to idle (backoffs pass on the fake clock)."""
    cell = supervisor.get(child_id)
    assert cell is not None
    while cell.restarts < restarts or cell.state is not ActorState.IDLE:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # fake time: nothing announces the end of a backoff


async def test_a_cell_keeps_its_last_crashes_with_tracebacks_newest_last() -> None:
    starts: list[str] = []
    spec: ChildSpec[str] = ChildSpec(lambda _id: Crasher(starts))
    async with Supervisor(policy=POLICY) as supervisor:
        cell = await supervisor.start_child("a", spec)
        for n in range(RECENT_ERRORS + 2):
            supervisor.send_nowait("a", f"crash:{n}")
            await restarted(supervisor, "a", n + 1)
        ring = cell.recent_errors
        assert ring is not None and len(ring) == RECENT_ERRORS
        assert [r.error for r in ring] == [f"RuntimeError: crash:{n}" for n in range(2, 7)]
        assert all(r.traceback and "RuntimeError: crash" in r.traceback for r in ring)
        assert ring[-1].error == cell.last_error
        snap = supervisor.registry.snapshot("a", 0.0)
        assert snap is not None and snap.recent_errors == tuple(ring)


async def test_restart_starts_a_fresh_incarnation_in_a_new_cell() -> None:
    starts: list[str] = []
    spec: ChildSpec[str] = ChildSpec(lambda _id: Crasher(starts))
    async with Supervisor(policy=POLICY) as supervisor:
        before = await supervisor.start_child("a", spec)
        after = await supervisor.restart_child("a")
        assert after is not before and after.state is ActorState.IDLE
        assert before.state is ActorState.STOPPED and starts == ["a", "a"]
        with pytest.raises(ActorUnavailable):
            await supervisor.restart_child("nobody")


async def test_operator_quarantine_runs_the_hook_and_release_restarts_it() -> None:
    starts: list[str] = []
    hooked: list[tuple[str, str]] = []

    async def on_quarantine(child_id: str, reason: str) -> None:
        hooked.append((child_id, reason))

    spec: ChildSpec[str] = ChildSpec(lambda _id: Crasher(starts))
    async with Supervisor(policy=POLICY, on_quarantine=on_quarantine) as supervisor:
        await supervisor.start_child("a", spec)
        await supervisor.start_child("b", spec)
        cell = await supervisor.quarantine_child("a", "quarantined by operator")
        assert cell.state is ActorState.QUARANTINED and cell.status == "quarantined by operator"
        assert hooked == [("a", "quarantined by operator")]
        with pytest.raises(ActorUnavailable):
            supervisor.send_nowait("a", "crash:0")
        await supervisor.quarantine_child("a", "again")
        assert hooked == [("a", "quarantined by operator")]  # already parked: nothing more
        sibling = supervisor.get("b")
        assert sibling is not None and sibling.state is ActorState.IDLE
        released = await supervisor.release("a")
        assert released.state is ActorState.IDLE and starts == ["a", "b", "a"]


async def test_a_taken_monitor_port_leaves_the_replica_running_without_a_monitor(
    json_logs: io.StringIO,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert ports_in_use("127.0.0.1", [port, 0]) == [port]
        async with Supervisor(name="monitor-test", policy=RestartPolicy()) as supervisor:
            monitor = start_monitor(
                supervisor, host="127.0.0.1", port=port, webui_port=0, console_port=0
            )
    assert monitor is None  # and start_monitor returned instead of waiting for a dead thread
    assert "monitor not started: port in use" in json_logs.getvalue()
