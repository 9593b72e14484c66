"""aiomonitor for a live replica, with ``actors`` and ``actor ID`` commands.

aiomonitor runs its commands on its own thread. Invariant: a command never touches a cell;
it asks the replica's loop for frozen snapshots (``call_soon_threadsafe``) and formats them.
aiomonitor has no authentication and its console runs arbitrary code, so it binds to
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

import click
from aiomonitor import Monitor, monitor_cli
from aiomonitor.termui.commands import auto_command_done, custom_help_option

from actors.cell import ActorState
from actors.registry import ActorSnapshot, RegistryStatistics, snapshot_of
from actors.supervisor import Supervisor
from supervisor.actor_table import actor_detail, actors_table, summary_line

T = TypeVar("T")

_SNAPSHOT_TIMEOUT_S = 5.0
_STATES = [state.value for state in ActorState]


class ActorView:
    """Thread-safe read access to a supervisor's registry, for another thread."""

    def __init__(self, supervisor: Supervisor, loop: asyncio.AbstractEventLoop) -> None:
        self._supervisor = supervisor
        self._loop = loop

    def _on_loop(self, fn: Callable[[], T]) -> T:
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=_SNAPSHOT_TIMEOUT_S)

    def statistics(self) -> RegistryStatistics:
        """Counts by state, taken on the loop."""
        return self._on_loop(self._supervisor.registry.statistics)

    def snapshots(self, state: str | None, limit: int) -> tuple[list[ActorSnapshot], int]:
        """Up to ``limit`` snapshots (optionally of one state) and how many matched in all."""
        states = None if state is None else frozenset({ActorState(state)})

        def take() -> tuple[list[ActorSnapshot], int]:
            now = self._loop.time()
            registry = self._supervisor.registry
            matching = [c for c in registry if states is None or c.state in states]
            return [snapshot_of(c, now) for c in matching[:limit]], len(matching)

        return self._on_loop(take)

    def snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """One actor's snapshot, or None."""
        return self._on_loop(
            lambda: self._supervisor.registry.snapshot(actor_id, self._loop.time())
        )


class ReplicaMonitor(Monitor):  # type: ignore[misc]
    """aiomonitor's Monitor that knows the replica's actors."""

    actor_view: ActorView | None = None


def _view(ctx: click.Context) -> ActorView:
    monitor: Any = ctx.obj
    view = getattr(monitor, "actor_view", None)
    if view is None:
        raise click.ClickException("this monitor has no actor runtime attached")
    assert isinstance(view, ActorView)
    return view


@monitor_cli.command(name="actors")
@click.option("-s", "--state", type=click.Choice(_STATES), help="only actors in this state")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="rows to show")
@custom_help_option
@auto_command_done
def do_actors(ctx: click.Context, state: str | None, limit: int) -> None:
    """Summary of the replica's actors, then a table of them."""
    view = _view(ctx)
    stats = view.statistics()
    snapshots, total = view.snapshots(state, max(0, limit))
    click.echo(summary_line(stats))
    click.echo(actors_table(snapshots, total=total))


@monitor_cli.command(name="actor")
@click.argument("actor_id")
@custom_help_option
@auto_command_done
def do_actor(ctx: click.Context, actor_id: str) -> None:
    """Everything about one actor: state, mailbox, deadlines, last error and traceback."""
    snapshot = _view(ctx).snapshot(actor_id)
    if snapshot is None:
        click.echo(f"no actor {actor_id!r}")
        return
    click.echo(actor_detail(snapshot))


def start_monitor(
    supervisor: Supervisor,
    *,
    host: str,
    port: int,
    webui_port: int,
    console_port: int,
    locals_: dict[str, Any] | None = None,
) -> ReplicaMonitor:
    """Start aiomonitor on its own thread, bound to ``host``; the caller closes it."""
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
