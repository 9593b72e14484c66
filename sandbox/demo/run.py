"""The demo's orchestration: set the stage, warm up, run the workload with faults, settle, compare.

Google and Microsoft emulators with the real clients, the webhook gateway on loopback, and a
replica running the real ``AccountsRuntime`` (account actors, shard inbox, change-feed relay).
Once every account finished its first full sync and opened its push channel, simulated people
edit their calendars while faults are injected. Actors poll only every 15 minutes, so what keeps
Postgres current is push: emulator -> gateway -> Redis shard stream -> inbox -> actor -> fenced
sync transaction -> ``changes`` row.

Invariants:
- everything started here (emulators, clients, gateway, replica, runtime, people, injector, the
  live view) is owned by one exit stack and closed in reverse order, shielded from cancellation,
  so Ctrl-C tears down as cleanly as the end of ``duration_s``;
- the runtime's settings are the caller's with ``public_base_url`` set to the in-process gateway
  and a small ``shard_count``; nothing else of the caller's configuration is changed;
- the finish (stop the people and the faults, clear them, re-connect revoked users, let the
  pipeline settle, compare) is bounded in time and runs even when the demo is cancelled; a
  cancelled demo prints its comparison and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Coroutine
from typing import Any, TextIO

import anyio
import structlog
from rich.console import Console

from config.settings import Settings
from kinds import default_registry
from sandbox.demo.emulators import DEMO_CLIENT_ID, GoogleSide, MicrosoftSide
from sandbox.demo.faults import FaultInjector
from sandbox.demo.finish import DemoSummary, finish
from sandbox.demo.journal import EditJournal, measure_lags
from sandbox.demo.people import EmulatedProvider
from sandbox.demo.schedule import fault_schedule
from sandbox.demo.seeding import demo_keyring, seed_accounts
from sandbox.demo.stage import Stage, start_gateway
from sandbox.demo.status import Gauges
from sandbox.demo.view import LiveView, open_view
from sandbox.demo.workload import simulate_people
from sandbox.emulators.shared.world import open_emulated_providers
from store.db import create_pool
from store.migrate import migrate
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.ops_server import OpsServer, open_ops_server
from supervisor.replica import open_replica
from supervisor.services import ServiceUrls

log = structlog.get_logger("sandbox.demo")

DEMO_SHARDS = 16
DEFAULT_EVENTS = 200  # 250 took 49-59 s to warm up on 2 shared cores; 200 keeps it under ~45 s
WARMUP_TIMEOUT_S = 120.0  # every account synced and watching, or the workload starts anyway
FINISH_TIMEOUT_S = 120.0  # the whole finish, comparison included
TICK_S = 0.5  # lag measurement and view refresh


async def run_demo(
    settings: Settings,
    urls: ServiceUrls,
    *,
    accounts: int,
    duration_s: float | None,
    edits_per_s: float,
    fault_rate: float,
    out: TextIO,
    events_per_account: int = DEFAULT_EVENTS,
    seed: int | None = None,
    reauth_after_s: float = 5.0,
    console: Console | None = None,
) -> DemoSummary:
    """Run the real pipeline with ``accounts`` sample accounts; ``fault_rate`` is faults per
    edit (0: none), drawn from a schedule fixed by ``seed``; see the module docstring."""
    if accounts < 1 or edits_per_s <= 0 or events_per_account < 0 or fault_rate < 0:
        raise ValueError("accounts >= 1, edits_per_s > 0, events and fault_rate >= 0")
    seed = secrets.randbits(32) if seed is None else seed
    rng = random.Random(seed)
    stack = contextlib.AsyncExitStack()
    try:
        view = stack.enter_context(open_view(out, console=console))
        world = await stack.enter_async_context(
            open_emulated_providers(DEMO_CLIENT_ID, secrets.token_urlsafe(24))
        )
        keyring = demo_keyring(settings)
        await migrate(urls.database_url, settings.db_schema, kinds=default_registry().catalog())
        gateway_url, gateway = await start_gateway(stack, urls, settings.db_schema)
        replica_settings = settings.model_copy(
            update={"public_base_url": gateway_url, "shard_count": DEMO_SHARDS}
        )
        replica = await stack.enter_async_context(open_replica(replica_settings, urls))
        demo_pool = await create_pool(urls.database_url, settings.db_schema, max_size=2)
        stack.push_async_callback(demo_pool.close)

        journal = EditJournal()
        sides: dict[str, EmulatedProvider] = {
            "google": GoogleSide(world.google, rng, journal.record),
            "microsoft": MicrosoftSide(world.microsoft, rng, journal.record),
        }
        view.say(f"seeding {accounts} accounts with {events_per_account} events each ...")
        seeded_at = time.monotonic()
        seeded = await seed_accounts(
            replica.pool,
            keyring,
            sides,
            count=accounts,
            events=events_per_account,
            shards=DEMO_SHARDS,
        )
        journal.accounts.update({a.email: a.id for a in seeded})
        view.say(f"seeded in {time.monotonic() - seeded_at:.1f}s")

        runtime = AccountsRuntime(replica, world.clients, keyring, scan_every_s=1.0)
        ops = await stack.enter_async_context(
            open_ops_server(replica_settings, replica, lambda: runtime.keeper)
        )
        runtime_task = _start(stack, runtime.run(), "demo.runtime")
        injector = FaultInjector(
            demo_pool,
            keyring,
            replica.supervisor,
            sides,
            seeded,
            shard_count=DEMO_SHARDS,
            reauth_after_s=reauth_after_s,
        )
        gauges = Gauges(replica.pool, replica.supervisor, gateway, None, journal, injector, seeded)
        stage = Stage(
            replica,
            runtime,
            runtime_task,
            world.clients,
            keyring,
            journal,
            injector,
            gauges,
        )
        view.say(
            f"gateway {gateway_url}; {edits_per_s:g} edits/s; fault rate {fault_rate:g} per edit"
            f" (seed {seed})"
        )
        _announce_operator_surface(view, replica_settings, ops)
        warmup_s = await _warm_up(stage, view)

        gauges.changes_before = int(
            await replica.pool.fetchval("SELECT coalesce(max(id), 0) FROM changes")
        )
        journal.recording = True
        people = _start(
            stack, simulate_people(list(sides.values()), journal, rng, edits_per_s), "demo.people"
        )
        schedule = fault_schedule(seed, fault_rate * edits_per_s)
        faults = _start(stack, injector.run(schedule), "demo.faults")
        workload = (people, faults)
        try:
            await _watch(stage, view, duration_s, workload)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT_S):
                await finish(stage, view, workload, warmup_s)
            raise
        with anyio.fail_after(FINISH_TIMEOUT_S):
            return await finish(stage, view, workload, warmup_s)
    finally:
        with anyio.CancelScope(shield=True):
            await stack.aclose()


def _announce_operator_surface(view: LiveView, settings: Settings, ops: OpsServer | None) -> None:
    """Where an engineer looks inside the running demo."""
    if ops is not None:
        view.say(f"metrics: {ops.url}/metrics (probes: /healthz, /readyz)")
    if settings.monitor_enabled:
        view.say(
            f"monitor: telnet {settings.monitor_host} {settings.monitor_port}"
            " (try: actors, actor <id>, shards)"
        )


def _start(
    stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    """A named task, cancelled and awaited when the stack closes."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    stack.push_async_callback(_cancel, task)
    return task


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # already reported by check_runtime; teardown goes on
        log.warning("task failed", task=task.get_name(), error=repr(exc))


async def _warm_up(stage: Stage, view: LiveView) -> float:
    """Wait until every demo account finished its full sync and watches its calendar."""
    started = time.monotonic()
    total = len(stage.accounts)
    while True:
        stage.check_runtime()
        inbox = stage.runtime.inbox
        stage.gauges.inbox = None if inbox is None else inbox.statistics
        watching = await stage.watching()
        elapsed = time.monotonic() - started
        if watching >= total:
            view.say(f"all {total} accounts synced and watching after {elapsed:.1f}s")
            return elapsed
        if elapsed > WARMUP_TIMEOUT_S:
            view.say(f"only {watching}/{total} accounts watching after {elapsed:.0f}s; going on")
            return elapsed
        view.show(await stage.gauges.figures(f"warming up, {watching}/{total} watching"))
        await anyio.sleep(TICK_S)


async def _watch(
    stage: Stage, view: LiveView, duration_s: float | None, workload: tuple[asyncio.Task[None], ...]
) -> None:
    """Measure lags and refresh the view until ``duration_s`` passes (or cancelled)."""
    started = time.monotonic()
    while duration_s is None or time.monotonic() - started < duration_s:
        stage.check_runtime()
        for task in workload:  # they run until cancelled: done means failed
            if task.done():
                raise RuntimeError(f"{task.get_name()} stopped") from task.exception()
        await measure_lags(stage.pool, stage.journal)
        view.show(await stage.gauges.figures("running"))
        await anyio.sleep(TICK_S)
