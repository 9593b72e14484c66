"""Actor runtime benchmark: idle memory, spawn time and message throughput against plain asyncio.

Each figure is measured in a fresh subprocess so one measurement's heap does not inflate the
next; ours and the baseline run in the same invocation, alternating, so ratios compare like with
like. Times are the best of ``--repeat`` runs (noise on a shared machine only ever slows a run).

    python -m bench.actors            # human-readable table
    python -m bench.actors --json     # one JSON object of figures
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import orjson
import structlog

from actors.actor import Actor
from actors.policy import RestartPolicy
from actors.spec import ChildSpec
from actors.supervisor import Supervisor

_TIMER_HORIZON_S = 900.0  # each idle actor arms one deadline, like a periodic sync
_RUN_LIMIT_S = 300.0  # a measurement that takes longer than this has failed


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class IdleActor(Actor[int]):
    """Arms one deadline and waits."""

    __slots__ = ()

    async def on_start(self) -> None:
        self.set_timer("sync", _TIMER_HORIZON_S)


class CountingActor(Actor[int]):
    """Counts the messages it handles into a shared counter."""

    __slots__ = ()
    handled = 0

    async def on_message(self, message: int) -> None:
        CountingActor.handled += 1


@dataclass(frozen=True, slots=True)
class SpawnFigures:
    bytes_per_unit: float
    spawn_s: float


async def _spawn_actors(count: int) -> SpawnFigures:
    spec = ChildSpec(factory=lambda _id: IdleActor(), kind="bench")
    ids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(count)]
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    async with Supervisor(name="bench", policy=RestartPolicy()) as supervisor:
        failures = await supervisor.start_children(ids, spec)
        elapsed = time.perf_counter() - started
        assert not failures
        gc.collect()
        after = rss_bytes()
        assert len(supervisor.registry) == count
        supervisor.shutdown_timeout_s = 60
    return SpawnFigures((after - before) / count, elapsed)


async def _spawn_baseline(count: int) -> SpawnFigures:
    async def worker(queue: asyncio.Queue[int]) -> None:
        while True:
            await queue.get()

    ids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(count)]
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    tasks = {}
    for task_id in ids:
        queue: asyncio.Queue[int] = asyncio.Queue()
        tasks[task_id] = (loop.create_task(worker(queue), name=f"task[{task_id}]"), queue)
    await asyncio.sleep(0)  # every task runs to its first get(), as our start does
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    for task, _ in tasks.values():
        task.cancel()
    await asyncio.gather(*(t for t, _ in tasks.values()), return_exceptions=True)
    return SpawnFigures((after - before) / count, elapsed)


async def _throughput_actors(actors: int, messages: int) -> float:
    spec = ChildSpec(factory=lambda _id: CountingActor(), kind="bench")
    async with Supervisor(name="bench", mailbox_capacity=messages) as supervisor:
        await supervisor.start_children([str(i) for i in range(actors)], spec)
        cells = [supervisor.get(str(i)) for i in range(actors)]
        CountingActor.handled = 0
        started = time.perf_counter()
        sent = 0
        while sent < messages:
            for cell in cells:
                assert cell is not None
                cell.send_nowait(sent)
                sent += 1
            await asyncio.sleep(0)
        while CountingActor.handled < messages:
            await asyncio.sleep(0)
            if time.perf_counter() - started > _RUN_LIMIT_S:
                raise RuntimeError(f"only {CountingActor.handled} of {messages} handled")
        elapsed = time.perf_counter() - started
        restarts = supervisor.registry.statistics().restarts
        if restarts:
            raise RuntimeError(f"{restarts} actor restarts during the measurement")
    return messages / elapsed


async def _throughput_baseline(actors: int, messages: int) -> float:
    handled = 0

    async def worker(queue: asyncio.Queue[int]) -> None:
        nonlocal handled
        while True:
            await queue.get()
            handled += 1

    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(actors)]
    tasks = [asyncio.create_task(worker(q)) for q in queues]
    await asyncio.sleep(0)
    started = time.perf_counter()
    sent = 0
    while sent < messages:
        for queue in queues:
            queue.put_nowait(sent)
            sent += 1
        await asyncio.sleep(0)
    while handled < messages:
        await asyncio.sleep(0)
        if time.perf_counter() - started > _RUN_LIMIT_S:
            raise RuntimeError(f"only {handled} of {messages} handled")
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return messages / elapsed


def _child(kind: str, count: int, messages: int) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if kind == "spawn":
        figures = asyncio.run(_spawn_actors(count))
        print(orjson.dumps([figures.bytes_per_unit, figures.spawn_s]).decode())
    elif kind == "spawn-baseline":
        figures = asyncio.run(_spawn_baseline(count))
        print(orjson.dumps([figures.bytes_per_unit, figures.spawn_s]).decode())
    elif kind == "throughput":
        print(orjson.dumps([asyncio.run(_throughput_actors(count, messages))]).decode())
    elif kind == "throughput-baseline":
        print(orjson.dumps([asyncio.run(_throughput_baseline(count, messages))]).decode())
    else:
        raise SystemExit(f"unknown measurement {kind}")


def _measure(kind: str, count: int, messages: int) -> list[float]:
    """Run one measurement in a fresh interpreter; its last stdout line is a JSON list."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.actors", "--child", kind, str(count), str(messages)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    return [float(x) for x in figures]


def main(argv: list[str] | None = None) -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--actors", type=int, default=100_000, help="idle actors to spawn")
    parser.add_argument("--throughput-actors", type=int, default=1_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; best is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, count, messages = args.child
        _child(kind, int(count), int(messages))
        return
    spawns: list[list[float]] = []
    base_spawns: list[list[float]] = []
    rates: list[float] = []
    base_rates: list[float] = []
    for _ in range(max(1, args.repeat)):
        spawns.append(_measure("spawn", args.actors, 0))
        base_spawns.append(_measure("spawn-baseline", args.actors, 0))
        rates.extend(_measure("throughput", args.throughput_actors, args.messages))
        base_rates.extend(_measure("throughput-baseline", args.throughput_actors, args.messages))
    # Memory: the median run; time: the fastest run.
    ours = [sorted(m for m, _ in spawns)[len(spawns) // 2], min(t for _, t in spawns)]
    base = [sorted(m for m, _ in base_spawns)[len(spawns) // 2], min(t for _, t in base_spawns)]
    rate, base_rate = max(rates), max(base_rates)
    figures = {
        "actors": args.actors,
        "bytes_per_actor": round(ours[0]),
        "baseline_bytes_per_task": round(base[0]),
        "spawn_s": round(ours[1], 3),
        "baseline_spawn_s": round(base[1], 3),
        "spawn_ratio": round(ours[1] / base[1], 2),
        "throughput_actors": args.throughput_actors,
        "messages": args.messages,
        "msgs_per_s": round(rate),
        "baseline_msgs_per_s": round(base_rate),
        "throughput_ratio": round(rate / base_rate, 2),
    }
    if args.json:
        print(orjson.dumps(figures).decode())
        return
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
