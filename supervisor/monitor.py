"""aiomonitor for a live replica: ``actors``, ``actor ID``, ``shards``, and the operator actions
``sync``, ``restart``, ``quarantine`` and ``release``.

aiomonitor runs its commands on its own thread. Invariants:
- a command never touches a cell, a lease or a connection: reads take frozen snapshots on the
  replica's loop (``call_soon_threadsafe``), and changes run there as coroutines
  (``run_coroutine_threadsafe``); the thread only waits for them and formats the answer;
- a page of the ``actors`` table snapshots only its own rows (``Registry.page``);
- account and shard commands need the accounts runtime, which attaches itself once it runs
  (``attach_accounts``): the monitor starts with the replica, before the runtime exists;
- a refusal is one line (``click.UsageError``, which aiomonitor prints without a traceback);
- aiomonitor has no authentication and its console runs arbitrary code, so it binds to
  127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import click
import structlog
from aiomonitor import Monitor, monitor_cli
from aiomonitor.termui.commands import auto_command_done, custom_help_option

from actors.cell import ActorState
from actors.registry import ActorSnapshot, RegistryPage, RegistryStatistics
from actors.supervisor import Supervisor
from cluster.shard_keeper import ShardKeeper
from store.db import PgPool
from supervisor.actor_table import (
    COLUMNS,
    actor_detail,
    actors_table,
    shards_table,
    summary_line,
)
from supervisor.monitor_accounts import AccountMetadata, AccountOperations, ActionRefused
from supervisor.monitor_shards import ShardsView, shards_view

log = structlog.get_logger("supervisor.monitor")

T = TypeVar("T")

_SNAPSHOT_TIMEOUT_S = 5.0
# Restart and quarantine wait for the actor to stop (up to the supervisor's shutdown timeout).
_ACTION_TIMEOUT_S = 60.0
_STATES = [state.value for state in ActorState]


class ActorView:
    """Thread-safe read access to a supervisor's registry, for another thread."""

    def __init__(self, supervisor: Supervisor, loop: asyncio.AbstractEventLoop) -> None:
        self._supervisor = supervisor
        self._loop = loop

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor whose children this view reads."""
        return self._supervisor

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The replica's loop, where every read and change runs."""
        return self._loop

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on the replica's loop and return its result to this thread."""
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=_SNAPSHOT_TIMEOUT_S)

    def run_on_loop(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coro`` on the replica's loop and wait for its result on this thread."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def statistics(self) -> RegistryStatistics:
        """Counts by state, taken on the loop."""
        return self.on_loop(self._supervisor.registry.statistics)

    def page(
        self, state: str | None, *, sort: str | None, reverse: bool, offset: int, limit: int
    ) -> RegistryPage:
        """One page of snapshots (optionally of one state, ordered by a column)."""
        states = None if state is None else frozenset({ActorState(state)})
        return self.on_loop(
            lambda: self._supervisor.registry.page(
                self._loop.time(),
                states=states,
                sort=sort,
                reverse=reverse,
                offset=offset,
                limit=limit,
            )
        )

    def snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """One actor's snapshot, or None."""
        return self.on_loop(lambda: self._supervisor.registry.snapshot(actor_id, self._loop.time()))


class ReplicaMonitor(Monitor):  # type: ignore[misc]
    """aiomonitor's Monitor that knows the replica's actors, accounts and shards."""

    actor_view: ActorView | None = None
    accounts: AccountOperations | None = None
    shard_keeper: ShardKeeper | None = None

    def attach_accounts(self, pool: PgPool, keeper: ShardKeeper) -> None:
        """Enable the account and shard commands (the accounts runtime calls this on its loop)."""
        view = self.actor_view
        assert view is not None
        self.accounts = AccountOperations(view.supervisor, pool)
        self.shard_keeper = keeper

    def detach_accounts(self) -> None:
        """The accounts runtime stopped: its commands say so again."""
        self.accounts = None
        self.shard_keeper = None


def _monitor(ctx: click.Context) -> ReplicaMonitor:
    monitor: Any = ctx.obj
    if not isinstance(monitor, ReplicaMonitor) or monitor.actor_view is None:
        raise click.UsageError("this monitor has no actor runtime attached")
    return monitor


def _view(ctx: click.Context) -> ActorView:
    view = _monitor(ctx).actor_view
    assert view is not None
    return view


def _accounts(ctx: click.Context) -> tuple[ActorView, AccountOperations]:
    accounts = _monitor(ctx).accounts
    if accounts is None:
        raise click.UsageError("no accounts runtime is running on this replica")
    return _view(ctx), accounts


@monitor_cli.command(name="actors")
@click.option("-s", "--state", type=click.Choice(_STATES), help="only actors in this state")
@click.option("--sort", type=click.Choice(COLUMNS), help="order by this column (default: start)")
@click.option("-r", "--reverse", is_flag=True, help="reverse the order")
@click.option("-p", "--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True)
@custom_help_option
@auto_command_done
def do_actors(
    ctx: click.Context,
    *,
    state: str | None,
    sort: str | None,
    reverse: bool,
    page: int,
    limit: int,
) -> None:
    """Summary of the replica's actors, then one page of them."""
    view = _view(ctx)
    stats = view.statistics()
    offset = (page - 1) * limit
    rows = view.page(state, sort=sort, reverse=reverse, offset=offset, limit=limit)
    click.echo(summary_line(stats))
    click.echo(actors_table(rows.snapshots, total=rows.matched, offset=offset, limit=limit))


@monitor_cli.command(name="actor")
@click.argument("actor_id")
@custom_help_option
@auto_command_done
def do_actor(ctx: click.Context, actor_id: str) -> None:
    """Everything about one actor: state, deadlines, account, calendars, channels, errors."""
    monitor, view = _monitor(ctx), _view(ctx)
    snapshot = view.snapshot(actor_id)
    if snapshot is None:
        click.echo(f"no actor {actor_id!r}")
        return
    metadata: AccountMetadata | None = None
    if monitor.accounts is not None:
        metadata = view.run_on_loop(monitor.accounts.metadata(actor_id), _SNAPSHOT_TIMEOUT_S)
    click.echo(actor_detail(snapshot, metadata))


@monitor_cli.command(name="shards")
@custom_help_option
@auto_command_done
def do_shards(ctx: click.Context) -> None:
    """The shards this replica holds: state, epoch, lease time left."""
    monitor, view = _monitor(ctx), _view(ctx)
    keeper = monitor.shard_keeper
    if keeper is None:
        raise click.UsageError("no accounts runtime is running on this replica")
    shards: ShardsView = view.on_loop(lambda: shards_view(keeper))
    click.echo(shards_table(shards))


def _act(
    ctx: click.Context, action: Callable[[AccountOperations], Coroutine[Any, Any, str]]
) -> None:
    view, accounts = _accounts(ctx)
    try:
        click.echo(view.run_on_loop(action(accounts), _ACTION_TIMEOUT_S))
    except ActionRefused as refused:
        raise click.UsageError(str(refused)) from None


@monitor_cli.command(name="sync")
@click.argument("actor_id")
@custom_help_option
@auto_command_done
def do_sync(ctx: click.Context, actor_id: str) -> None:
    """Ask an account's actor to sync every calendar now."""
    _act(ctx, lambda ops: ops.sync_now(actor_id))


@monitor_cli.command(name="restart")
@click.argument("actor_id")
@custom_help_option
@auto_command_done
def do_restart(ctx: click.Context, actor_id: str) -> None:
    """Stop an actor and start it again from storage."""
    _act(ctx, lambda ops: ops.restart(actor_id))


@monitor_cli.command(name="quarantine")
@click.argument("actor_id")
@custom_help_option
@auto_command_done
def do_quarantine(ctx: click.Context, actor_id: str) -> None:
    """Stop an actor and park it as quarantined (its account too) until released."""
    _act(ctx, lambda ops: ops.quarantine(actor_id))


@monitor_cli.command(name="release")
@click.argument("actor_id")
@custom_help_option
@auto_command_done
def do_release(ctx: click.Context, actor_id: str) -> None:
    """Make a quarantined account active again and restart its actor."""
    _act(ctx, lambda ops: ops.release(actor_id))


def ports_in_use(host: str, ports: Sequence[int]) -> list[int]:
    """Those of ``ports`` (0: any, never taken) that cannot be bound on ``host`` now."""
    taken = []
    for port in ports:
        if port == 0:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                probe.bind((host, port))
            except OSError:
                taken.append(port)
    return taken


def start_monitor(
    supervisor: Supervisor,
    *,
    host: str,
    port: int,
    webui_port: int,
    console_port: int,
    locals_: dict[str, Any] | None = None,
) -> ReplicaMonitor | None:
    """Start aiomonitor on its own thread, bound to ``host``; the caller closes it. None (and
    an error logged) when one of its ports is taken: the replica runs on without a monitor."""
    taken = ports_in_use(host, (port, webui_port, console_port))
    if taken:
        # aiomonitor's thread would die binding it, and its start() would wait for it forever.
        log.error("monitor not started: port in use", host=host, ports=taken)
        return None
    loop = asyncio.get_running_loop()
    monitor = ReplicaMonitor(
        loop,
        host=host,
        termui_port=port,
        webui_port=webui_port,
        console_port=console_port,
        locals=locals_,
    )
    monitor.actor_view = ActorView(supervisor, loop)
    monitor.start()
    return monitor
