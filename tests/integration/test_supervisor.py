"""The supervisor under crashes, storms, shutdowns and cancellation, on a fake clock (looptime)."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field

import orjson
import pytest
import structlog

from actors.actor import Actor
from actors.cell import ActorCell, ActorState
from actors.circuit import CircuitPolicy
from actors.errors import (
    ActorUnavailable,
    ChildStartError,
    MailboxFull,
    SupervisorEscalation,
)
from actors.policy import OnExhausted, RestartPolicy, RestartType
from actors.spec import ChildSpec
from actors.supervisor import Supervisor

pytestmark = pytest.mark.looptime

POLICY = RestartPolicy(max_restarts=3, period_s=60.0, backoff_initial_s=1.0, backoff_max_s=8.0)


@dataclass
class World:
    """What the test actors share: their storage stand-in and what they observed."""

    dependency_up: bool = True
    fail_start: set[str] = field(default_factory=set)
    starts: Counter[str] = field(default_factory=Counter)
    handled: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    stops: list[str] = field(default_factory=list)
    deadlines: list[tuple[str, str, float]] = field(default_factory=list)
    posts: list[tuple[object, list[object]]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)


class Probe(Actor[str]):
    """A test actor: messages name what it should do."""

    __slots__ = ("incarnation_handled", "world")

    def __init__(self, world: World) -> None:
        self.world = world
        self.incarnation_handled = 0

    async def on_start(self) -> None:
        self.world.starts[self.id] += 1
        if self.id in self.world.fail_start or not self.world.dependency_up:
            raise ConnectionError("storage unreachable")

    async def on_message(self, message: str) -> None:
        if message == "crash":
            raise RuntimeError(f"boom in {self.id}")
        if message == "crash-with-token":  # an exception that carries a credential
            raise RuntimeError("refresh failed: Authorization: Bearer ya29.a0AfH6SMBsecretvalue")
        if message == "needs-dependency" and not self.world.dependency_up:
            raise ConnectionError("storage unreachable")
        if message == "stray-cancel":
            raise asyncio.CancelledError
        if message == "log":
            structlog.get_logger("tests.probe").info("handled", note="from inside the actor")
        if message == "block":
            await self.world.gate.wait()
        if message == "exit":
            self.stop_nowait()
        if message.startswith("timer:"):
            self.set_timer(message, float(message.split(":")[1]))
        self.incarnation_handled += 1
        self.world.handled[self.id].append(message)

    async def on_posts(self, key: Hashable, items: list[object]) -> None:
        self.world.posts.append((key, items))
        if key == "slow":
            await self.world.gate.wait()

    async def on_deadline(self, name: str) -> None:
        self.world.deadlines.append((self.id, name, asyncio.get_running_loop().time()))

    async def on_stop(self) -> None:
        self.world.stops.append(self.id)


class Stubborn(Probe):
    """Ignores the request to stop: its on_stop never returns."""

    __slots__ = ()

    async def on_stop(self) -> None:
        await asyncio.sleep(3600)


def spec(world: World, **kwargs: object) -> ChildSpec[str]:
    return ChildSpec(factory=lambda _id: Probe(world), **kwargs)  # type: ignore[arg-type]


def supervisor(**kwargs: object) -> Supervisor:
    kwargs.setdefault("policy", POLICY)
    kwargs.setdefault("rng", random.Random(1))
    return Supervisor(**kwargs)  # type: ignore[arg-type]


def state(cell: ActorCell[str]) -> ActorState:
    """Read the state without letting mypy narrow it (other tasks change it between reads)."""
    return cell.state


def now() -> float:
    return asyncio.get_running_loop().time()


async def settle() -> None:
    """Let every ready task run (no loop time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_start_is_synchronous_and_tasks_are_named() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("acct-1", spec(world))
        assert world.starts["acct-1"] == 1  # on_start ran before start_child returned
        assert state(cell) is ActorState.IDLE
        assert cell.task is not None and cell.task.get_name() == "actor[acct-1]"


async def test_failed_first_start_raises_and_leaves_nothing_behind() -> None:
    world = World(fail_start={"bad"})
    async with supervisor() as sup:
        with pytest.raises(ChildStartError, match="storage unreachable"):
            await sup.start_child("bad", spec(world))
        assert sup.get("bad") is None
        failures = await sup.start_children(["ok", "bad"], spec(world))
        assert list(failures) == ["bad"]
        assert sup.get("ok") is not None and sup.get("bad") is None


async def test_a_crash_message_is_redacted_before_anyone_sees_it() -> None:
    # Before: the crash text went as it was to the monitor, the API and accounts.last_error.
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        cell.send_nowait("crash-with-token")
        await settle()
        assert cell.last_error is not None and "[REDACTED]" in cell.last_error
        assert cell.last_traceback is not None
        for shown in (cell.last_error, cell.last_traceback):
            assert "ya29" not in shown and "secretvalue" not in shown


async def test_crash_restarts_after_backoff_with_fresh_state() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        cell.send_nowait("hello")
        await settle()
        first = cell.actor
        assert isinstance(first, Probe) and first.incarnation_handled == 1
        crashed_at = now()
        cell.send_nowait("crash")
        await settle()
        assert state(cell) is ActorState.BACKOFF
        assert cell.last_error == "RuntimeError: boom in a"
        assert cell.last_traceback is not None and "boom in a" in cell.last_traceback
        cell.send_nowait("while-down")  # accepted: delivered to the next incarnation
        await asyncio.sleep(0.49)  # first backoff is in [0.5, 1.0] s
        assert state(cell) is ActorState.BACKOFF and world.starts["a"] == 1
        while state(cell) is not ActorState.IDLE:  # noqa: ASYNC110 - 10 ms steps of fake time
            await asyncio.sleep(0.01)
        assert 0.5 <= now() - crashed_at <= 1.0 + 0.02
        assert world.starts["a"] == 2 and cell.restarts == 1
        second = cell.actor
        assert isinstance(second, Probe) and second is not first
        assert second.incarnation_handled == 1  # state was rebuilt, not carried over
        assert world.handled["a"] == ["hello", "while-down"]


async def test_crash_storm_quarantines_only_that_actor() -> None:
    world = World()
    quarantined: list[tuple[str, str]] = []

    async def on_quarantine(child_id: str, reason: str) -> None:
        quarantined.append((child_id, reason))

    async with supervisor(on_quarantine=on_quarantine) as sup:
        await sup.start_children(["poison", "healthy"], spec(world))
        poison, healthy = sup.get("poison"), sup.get("healthy")
        assert poison is not None and healthy is not None
        for _ in range(POLICY.max_restarts + 1):
            await asyncio.sleep(10)  # every backoff is over
            poison.send_nowait("crash")
            healthy.send_nowait("work")
            await settle()
        assert poison.state is ActorState.QUARANTINED
        assert poison.restarts == POLICY.max_restarts
        assert quarantined == [("poison", "RuntimeError: boom in poison")]
        assert poison.task is not None and poison.task.done()
        with pytest.raises(ActorUnavailable):
            poison.send_nowait("more")
        assert healthy.state is ActorState.IDLE and healthy.restarts == 0
        assert world.handled["healthy"] == ["work"] * (POLICY.max_restarts + 1)

        released = await sup.release("poison")
        assert released.state is ActorState.IDLE and world.starts["poison"] == 5


async def test_crashes_spread_beyond_the_period_never_quarantine() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        for _ in range(3 * POLICY.max_restarts):
            cell.send_nowait("crash")
            await asyncio.sleep(POLICY.period_s + 1)
        assert state(cell) is ActorState.IDLE
        assert cell.restarts == 3 * POLICY.max_restarts


async def test_escalation_shuts_everything_down_and_reaches_the_owner() -> None:
    world = World()
    infra = spec(world, on_exhausted=OnExhausted.ESCALATE, kind="lease-keeper")
    with pytest.raises(SupervisorEscalation) as info:
        async with supervisor() as sup:
            keeper = await sup.start_child("keeper", infra)
            await sup.start_child("account", spec(world))
            for _ in range(POLICY.max_restarts + 1):
                keeper.send_nowait("crash")
                await asyncio.sleep(10)
            await sup.wait_closed()
    assert info.value.child_id == "keeper"
    assert world.stops == ["account"]  # the sibling was stopped cleanly
    assert len(sup.registry) == 0


@pytest.mark.parametrize(
    ("restart", "message", "restarted"),
    [
        (RestartType.PERMANENT, "exit", True),
        (RestartType.PERMANENT, "crash", True),
        (RestartType.TRANSIENT, "exit", False),
        (RestartType.TRANSIENT, "crash", True),
        (RestartType.TEMPORARY, "exit", False),
        (RestartType.TEMPORARY, "crash", False),
    ],
)
async def test_restart_types(restart: RestartType, message: str, restarted: bool) -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world, restart=restart))
        cell.send_nowait(message)
        await asyncio.sleep(30)
        assert world.starts["a"] == (2 if restarted else 1)
        assert (sup.get("a") is not None) is restarted
        if not restarted:
            assert state(cell) is ActorState.STOPPED


async def test_shutdown_stops_in_reverse_order_and_cancels_a_stubborn_child() -> None:
    world = World()
    stubborn: ChildSpec[str] = ChildSpec(factory=lambda _id: Stubborn(world))
    sup = supervisor(shutdown_timeout_s=5.0)
    async with sup:
        await sup.start_children(["first", "second"], spec(world))
        await sup.start_child("stuck", stubborn)
        await sup.start_child("last", spec(world))
        cells = list(sup.registry)
        started = now()
    assert world.stops == ["last", "second", "first"]  # reverse start order; "stuck" never did
    assert 5.0 <= now() - started < 5.5  # waited the timeout once, then cancelled
    assert all(c.task is not None and c.task.done() for c in cells)
    assert all(state(c) is ActorState.STOPPED for c in cells)
    assert len(sup.registry) == 0


async def test_cancelling_the_owner_mid_restart_leaves_no_task_behind() -> None:
    world = World()
    ready = asyncio.Event()
    cells = []

    async def owner() -> None:
        async with supervisor() as sup:
            cell = await sup.start_child("a", spec(world))
            cells.append(cell)
            cell.send_nowait("crash")
            await settle()
            assert state(cell) is ActorState.BACKOFF
            ready.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(owner())
    await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (cell,) = cells
    assert cell.task is not None and cell.task.done()
    await asyncio.sleep(60)  # long past the backoff: nothing came back
    assert world.starts["a"] == 1
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("actor[")]


async def test_full_mailbox_refuses_and_loses_nothing_it_took() -> None:
    world = World()
    async with supervisor(mailbox_capacity=3) as sup:
        cell = await sup.start_child("a", spec(world))
        cell.send_nowait("block")
        await settle()  # the actor is now inside on_message, the mailbox empty
        assert state(cell) is ActorState.BUSY and cell.mailbox is None
        for i in range(3):
            cell.send_nowait(f"m{i}")
        with pytest.raises(MailboxFull):
            cell.send_nowait("m3")
        assert cell.mailbox_depth == 3
        world.gate.set()
        await settle()
        assert world.handled["a"] == ["block", "m0", "m1", "m2"]
        assert cell.mailbox is None  # drained: the idle actor holds no deque
        cell.send_nowait("m3")  # room again
        await settle()
        assert world.handled["a"][-1] == "m3"


async def test_circuit_holds_restarts_while_a_shared_dependency_is_down() -> None:
    world = World()
    ids = [f"acct-{i}" for i in range(40)]
    circuit = CircuitPolicy(window_s=10, min_failures=5, failure_ratio=0.25, cooldown_s=5)
    quarantined: list[str] = []

    async def on_quarantine(child_id: str, reason: str) -> None:
        quarantined.append(child_id)

    async with supervisor(circuit=circuit, on_quarantine=on_quarantine) as sup:
        await sup.start_children(ids, spec(world))
        world.dependency_up = False
        for child_id in ids:
            sup.send_nowait(child_id, "needs-dependency")
        await asyncio.sleep(60)  # down for a minute: far more than any budget allows
        states = Counter(c.state for c in sup.registry)
        assert sup.circuit.holding and sup.circuit.times_opened >= 1
        assert states[ActorState.HELD] >= 30  # most wait, uncharged, instead of crash-looping
        assert not quarantined
        starts_while_down = sum(world.starts.values())
        await asyncio.sleep(120)
        assert sum(world.starts.values()) - starts_while_down < 20  # only a few probes

        world.dependency_up = True
        await asyncio.sleep(circuit.max_cooldown_s + circuit.release_spread_s + 10)
        assert not sup.circuit.holding
        assert all(state(c) is ActorState.IDLE for c in sup.registry)
        assert len(sup.registry) == len(ids) and not quarantined


async def test_one_crash_never_disturbs_siblings() -> None:
    world = World()
    ids = [f"s{i}" for i in range(100)]
    async with supervisor() as sup:
        await sup.start_children(ids, spec(world))
        tasks = {c.id: c.task for c in sup.registry}
        for round_ in range(3):
            sup.send_nowait("s0", "crash")
            for child_id in ids[1:]:
                sup.send_nowait(child_id, f"r{round_}")
            await asyncio.sleep(10)
        for cell in list(sup.registry)[1:]:
            assert state(cell) is ActorState.IDLE and cell.restarts == 0
            assert cell.task is not None and cell.task is tasks[cell.id]
            assert not cell.task.done()
            assert world.handled[cell.id] == ["r0", "r1", "r2"]
        assert sup.registry.statistics().restarts == 3


async def test_stray_cancelled_error_is_a_crash_but_task_cancel_ends_the_child() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        cell.send_nowait("stray-cancel")
        await asyncio.sleep(10)
        assert world.starts["a"] == 2 and state(cell) is ActorState.IDLE

        assert cell.task is not None
        cell.task.cancel()
        await settle()
        assert cell.task.done() and state(cell) is ActorState.STOPPED
        assert cell.last_error == "task cancelled from outside its supervisor"
        await asyncio.sleep(60)
        assert world.starts["a"] == 2  # an outside cancellation is not restarted

        other = await sup.start_child("b", spec(world))
        await sup.stop_child("b")  # the supervisor's own stop is told apart: no error
        assert state(other) is ActorState.STOPPED and other.last_error is None
        assert world.stops[-1] == "b"


async def test_stop_children_stops_several_at_once_and_forgets_them() -> None:
    world = World()
    async with supervisor() as sup:
        cells = await sup.start_children(["a", "b", "c"], spec(world))
        assert cells == {}
        await sup.stop_children(["a", "c", "missing"])
        assert sorted(world.stops) == ["a", "c"]
        assert sup.get("a") is None and sup.get("c") is None
        b = sup.get("b")
        assert b is not None and state(b) is ActorState.IDLE


async def test_deadlines_fire_on_time_without_a_task_each() -> None:
    world = World()
    ids = [f"d{i}" for i in range(50)]
    async with supervisor() as sup:
        await sup.start_children(ids, spec(world))
        t0 = now()
        tasks_before = len(asyncio.all_tasks())
        for i, child_id in enumerate(ids):
            sup.send_nowait(child_id, f"timer:{10 + i}")
        await settle()
        assert len(asyncio.all_tasks()) == tasks_before
        await asyncio.sleep(100)
        fired = {child_id: at - t0 for child_id, _, at in world.deadlines}
        assert fired == pytest.approx({child_id: 10 + i for i, child_id in enumerate(ids)})


async def test_rearmed_and_cancelled_deadlines() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        actor = cell.actor
        assert actor is not None
        t0 = now()
        actor.set_timer("sync", 50)
        actor.set_timer("renew", 10)
        actor.set_timer("renew", 30)  # moved later: fires at 30, not 10
        actor.set_timer("gone", 5)
        actor.cancel_deadline("gone")
        await asyncio.sleep(100)
        assert [(n, round(at - t0)) for _, n, at in world.deadlines] == [
            ("renew", 30),
            ("sync", 50),
        ]
        snapshot = sup.registry.snapshot("a", now())
        assert snapshot is not None and snapshot.deadlines == ()


async def test_each_actor_logs_with_its_own_context(json_logs: io.StringIO) -> None:
    world = World()
    async with supervisor() as sup:
        await sup.start_children(["a", "b"], spec(world, kind="account"))
        sup.send_nowait("a", "log")
        sup.send_nowait("b", "crash")
        await asyncio.sleep(10)
    lines = [orjson.loads(line) for line in json_logs.getvalue().splitlines()]
    handled = [r for r in lines if r.get("event") == "handled"]
    assert [(r["actor"], r["kind"], r["note"]) for r in handled] == [
        ("a", "account", "from inside the actor")
    ]
    (crashed,) = [r for r in lines if r.get("event") == "actor crashed"]
    assert crashed["actor"] == "b" and crashed["level"] == "warning"
    assert "boom in b" in orjson.dumps(crashed).decode()


async def test_outside_cancellation_during_backoff_ends_the_child_without_restart() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        cell.send_nowait("crash")
        await settle()
        assert state(cell) is ActorState.BACKOFF and cell.task is not None
        cell.task.cancel()
        await settle()
        assert cell.task.done() and state(cell) is ActorState.STOPPED
        assert cell.last_error == "task cancelled from outside its supervisor"
        await asyncio.sleep(60)
        assert world.starts["a"] == 1


async def test_a_release_that_fails_to_start_stays_quarantined() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        for _ in range(POLICY.max_restarts + 1):
            cell.send_nowait("crash")
            await asyncio.sleep(10)
        assert state(cell) is ActorState.QUARANTINED
        world.fail_start.add("a")
        with pytest.raises(ChildStartError):
            await sup.release("a")
        assert sup.get("a") is cell and state(cell) is ActorState.QUARANTINED
        world.fail_start.clear()
        released = await sup.release("a")
        assert state(released) is ActorState.IDLE and released.restarts == 0


async def test_posts_coalesce_by_key_and_cost_one_follow_up() -> None:
    world = World()
    async with supervisor(mailbox_capacity=1) as sup:
        cell = await sup.start_child("a", spec(world))
        for entry in range(100):  # a burst for one calendar: far beyond the mailbox capacity
            sup.post_nowait("a", ("sync", "cal-1"), f"1-{entry}")
        sup.post_nowait("a", ("sync", "cal-2"))
        assert cell.mailbox_depth == 2  # two keys pending, whatever the burst size
        await settle()
        assert [key for key, _ in world.posts] == [("sync", "cal-1"), ("sync", "cal-2")]
        assert world.posts[0][1] == [f"1-{entry}" for entry in range(100)]
        assert world.posts[1][1] == []
        assert cell.posts is None  # an idle actor keeps no dict

        world.posts.clear()
        sup.post_nowait("a", "slow", "first")
        await settle()  # on_posts is running and blocked
        for entry in range(5):  # arriving during the handling of "slow"
            sup.post_nowait("a", "slow", f"late-{entry}")
        world.gate.set()
        await settle()
        assert world.posts == [("slow", ["first"]), ("slow", [f"late-{e}" for e in range(5)])]


async def test_posts_wait_out_a_restart_and_are_refused_once_quarantined() -> None:
    world = World()
    async with supervisor() as sup:
        cell = await sup.start_child("a", spec(world))
        cell.send_nowait("crash")
        await settle()
        assert state(cell) is ActorState.BACKOFF
        sup.post_nowait("a", "sync", "kept")
        await asyncio.sleep(10)
        assert world.posts == [("sync", ["kept"])]  # delivered to the next incarnation
        for _ in range(POLICY.max_restarts):  # the first crash already used one restart
            cell.send_nowait("crash")
            await asyncio.sleep(10)
        assert state(cell) is ActorState.QUARANTINED
        with pytest.raises(ActorUnavailable):
            sup.post_nowait("a", "sync")
        with pytest.raises(ActorUnavailable):
            sup.post_nowait("nobody", "sync")
