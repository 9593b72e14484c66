"""The live view: the demo's figures as a ``rich`` panel on a terminal, plain lines elsewhere.

Invariants:
- rendering is a pure function of a ``Figures`` value (testable against any ``Console``);
- on a terminal one ``rich.live.Live`` bound to the output stream redraws the panel in place, at
  most as often as ``show`` is called (no refresh thread); lines said meanwhile scroll above it;
- anywhere else (tests, CI, pipes) the view writes plain lines without ANSI escapes, one status
  line at most every ``plain_every_s``;
- the panel is frozen (left on screen as last drawn) by ``freeze`` or when the view's block
  exits; what is said after that goes below it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

# Display order of account states; any other state is shown after these.
STATE_ORDER = (
    "synced",
    "syncing",
    "starting",
    "retrying",
    "restarting",
    "needs_reauth",
    "parked",
    "quarantined",
    "stopped",
)


@dataclass(frozen=True, slots=True)
class Figures:
    """What the view shows at one moment."""

    phase: str
    elapsed_s: float
    accounts: int
    states: Mapping[str, int] = field(default_factory=dict)  # accounts by state
    notifications: int = 0  # stream entries the gateway appended
    notifications_per_s: float = 0.0
    delivered: int = 0  # entries the replica's inbox routed to actors
    delivered_per_s: float = 0.0
    edits: int = 0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_samples: int = 0
    changes: int = 0  # change rows committed since the workload started
    published: int = 0  # of those, published to the change feed
    events: int = 0  # live events stored
    restarts: int = 0  # actor restarts after crashes
    faults: Mapping[str, int] = field(default_factory=dict)  # injected, by kind
    errors: Mapping[str, int] = field(default_factory=dict)  # by kind
    actor_summary: str = ""  # the monitor's one-line summary of every actor


def ms(value: float | None) -> str:
    """A lag for people: ``-`` before the first one."""
    return "-" if value is None else f"{value:.0f}ms"


def _ordered(states: Mapping[str, int]) -> list[tuple[str, int]]:
    known = [(s, states[s]) for s in STATE_ORDER if states.get(s)]
    return known + sorted((s, n) for s, n in states.items() if s not in STATE_ORDER and n)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "none"


def render(fig: Figures) -> Panel:
    """The panel for a terminal."""
    states = Table(title="accounts by state", box=box.SIMPLE, show_header=False, min_width=22)
    states.add_column(style="bold")
    states.add_column(justify="right")
    for state, count in _ordered(fig.states):
        states.add_row(state, str(count))
    states.add_row("total", str(fig.accounts))

    flow = Table(title="sync", box=box.SIMPLE, show_header=False)
    flow.add_column(style="bold")
    flow.add_column(justify="right")
    flow.add_row("notifications/s", f"{fig.notifications_per_s:.1f} ({fig.notifications} total)")
    flow.add_row("delivered/s", f"{fig.delivered_per_s:.1f} ({fig.delivered} total)")
    flow.add_row("edits", str(fig.edits))
    flow.add_row("lag p50", ms(fig.lag_p50_ms))
    flow.add_row("lag p99", ms(fig.lag_p99_ms))
    flow.add_row("changes", f"{fig.changes} ({fig.published} published)")
    flow.add_row("events stored", str(fig.events))

    trouble = Table(title="faults and errors", box=box.SIMPLE, show_header=False)
    trouble.add_column(style="bold")
    trouble.add_column(justify="right")
    for kind, count in sorted(fig.faults.items()):
        trouble.add_row(f"injected {kind}", str(count))
    for kind, count in sorted(fig.errors.items()):
        trouble.add_row(kind, str(count))
    trouble.add_row("actor restarts", str(fig.restarts))

    grid = Table.grid(padding=(0, 2))
    grid.add_row(states, flow, trouble)
    title = f"integration-worker demo: {fig.phase} ({fig.elapsed_s:.0f}s)"
    return Panel(Group(grid), title=title, expand=False)


def plain_line(fig: Figures) -> str:
    """One line for a log or a pipe."""
    states = ", ".join(f"{s} {n}" for s, n in _ordered(fig.states)) or "none"
    return (
        f"{fig.phase} {fig.elapsed_s:.0f}s: {fig.actor_summary}; accounts ({states});"
        f" notifications {fig.notifications} ({fig.notifications_per_s:.1f}/s),"
        f" delivered {fig.delivered_per_s:.1f}/s; edits {fig.edits};"
        f" lag p50 {ms(fig.lag_p50_ms)} p99 {ms(fig.lag_p99_ms)};"
        f" changes {fig.changes} ({fig.published} published); events {fig.events};"
        f" faults {_counts(fig.faults)}; errors {_counts(fig.errors)}"
    )


class LiveView:
    """Shows figures (``show``) and lines that stay (``say``) on one output stream."""

    def __init__(self, out: TextIO, console: Console | None, *, plain_every_s: float) -> None:
        self.out = out
        self.console = console
        self.plain_every_s = plain_every_s
        self.live: Live | None = None
        self.frozen = False
        self._shown_at = float("-inf")

    @property
    def interactive(self) -> bool:
        """Whether the panel is redrawn in place (a terminal)."""
        return self.console is not None

    def show(self, fig: Figures, *, force: bool = False) -> None:
        """Redraw the panel, or write a plain line if ``plain_every_s`` passed (or ``force``)."""
        if self.console is not None and not self.frozen:
            if self.live is None:  # started on first use: no empty panel under early lines
                self.live = Live(
                    console=self.console,
                    auto_refresh=False,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self.live.start()
            self.live.update(render(fig), refresh=True)
            return
        now = time.monotonic()
        if force or now - self._shown_at >= self.plain_every_s:
            self._shown_at = now
            self.say(plain_line(fig))

    def freeze(self) -> None:
        """Stop redrawing: the panel stays as last drawn and later lines go below it."""
        self.frozen = True
        if self.live is not None:
            self.live.stop()
            self.live = None

    def say(self, line: str) -> None:
        """A line that stays (above the panel on a terminal while it is live)."""
        if self.console is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(f"{line}\n")
            self.out.flush()


@contextmanager
def open_view(
    out: TextIO, *, console: Console | None = None, plain_every_s: float = 2.0
) -> Iterator[LiveView]:
    """A live panel when ``out`` is a terminal (or ``console`` is given), else plain lines."""
    if console is None and out.isatty():
        console = Console(file=out)
    view = LiveView(out, console, plain_every_s=plain_every_s)
    try:
        yield view
    finally:
        view.freeze()
