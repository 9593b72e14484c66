"""The slot one supervised child lives in: mailbox, deadlines, state and counters.

A cell outlives the child's incarnations: when the child crashes, the supervisor builds a new
actor from the spec (state rebuilt from storage, never the crashed state) into the same cell,
so messages sent while the child was restarting are delivered to the next incarnation and the
child keeps one task, one name and one row in the registry.

Invariants:
- an idle cell holds no mailbox (``mailbox is None``): the deque is allocated by the first
  message and dropped once drained, because most actors are idle most of the time;
- the mailbox never holds more than the supervisor's ``mailbox_capacity`` messages;
- posts (``post_nowait``) coalesce by key: one pending entry per key however many posts arrive,
  so they cannot overflow; the actor takes a key's items all at once, and posts that arrive
  while it handles them make exactly one new entry (one follow-up);
- ``wake_at`` is when the child's task wants to be woken: the earliest of ``deadlines`` while
  it serves, the end of its backoff while it waits to restart, ``inf`` for never;
- ``scheduled_at <= wake_at``: the supervisor's heap holds a live entry for the cell at
  ``scheduled_at``, so a waiting child needs one future and no timer of its own;
- only the loop thread touches a cell; other threads read snapshots taken on the loop;
- ``recent_errors`` keeps the last ``RECENT_ERRORS`` crashes, newest last, and like ``info``
  (what the actor tells the monitor about itself) outlives incarnations; both are None until used.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from actors.errors import ActorUnavailable, MailboxFull
from actors.policy import RestartBudget

if TYPE_CHECKING:
    from actors.actor import Actor
    from actors.spec import ChildSpec
    from actors.supervisor import StartBatch


class CellHost(Protocol):
    """What a cell needs from its supervisor."""

    mailbox_capacity: int

    def schedule_wake(self, cell: ActorCell[Any], at: float) -> None:
        """Make sure the cell is woken at loop time ``at``."""


M = TypeVar("M")

INF = math.inf
RECENT_ERRORS = 5  # crashes kept per cell, with their tracebacks


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One crash of a child: when (wall clock), what, and its traceback."""

    at: float
    error: str
    traceback: str | None


@dataclass(slots=True)
class ActorInfo:
    """What an actor tells the monitor about itself; kept by the cell across incarnations."""

    provider: str | None = None
    last_sync_at: float | None = None  # wall clock of the last successful sync


class ActorState(enum.Enum):
    """Lifecycle states shown by the registry, metrics and the monitor."""

    STARTING = "starting"  # on_start running
    IDLE = "idle"  # waiting for a message or a deadline
    BUSY = "busy"  # handling a message or a deadline
    BACKOFF = "backoff"  # crashed, waiting to be restarted
    HELD = "held"  # crashed while the restart circuit is open
    QUARANTINED = "quarantined"  # restart budget spent; parked until released
    STOPPING = "stopping"  # asked to stop, on_stop running
    STOPPED = "stopped"  # exited and will not be restarted


# States in which the cell takes no messages; a restarting child gets them on its next start.
# Compared by identity: Enum.__hash__ is Python code, too slow for the send path.
_CLOSED = (ActorState.QUARANTINED, ActorState.STOPPING, ActorState.STOPPED)


class ActorCell(Generic[M]):
    """One supervised child: the handle senders use and the record the registry shows."""

    __slots__ = (
        "actor",
        "budget",
        "deadlines",
        "exit_requested",
        "host",
        "id",
        "info",
        "last_activity",
        "last_error",
        "last_traceback",
        "mailbox",
        "posts",
        "probe",
        "recent_errors",
        "restarts",
        "scheduled_at",
        "spec",
        "start_batch",
        "state",
        "status",
        "stop_requested",
        "task",
        "waiter",
        "wake_at",
    )

    def __init__(
        self, child_id: str, spec: ChildSpec[M], host: CellHost, created_at: float | None = None
    ) -> None:
        self.id = child_id
        self.spec = spec
        self.host = host
        self.actor: Actor[M] | None = None
        self.task: asyncio.Task[None] | None = None
        self.state = ActorState.STARTING
        self.status: str | None = None
        self.mailbox: deque[M] | None = None
        self.posts: dict[Hashable, list[object]] | None = None  # allocated by the first post
        self.waiter: asyncio.Future[None] | None = None
        self.deadlines: dict[str, float] | None = None
        self.wake_at = INF
        self.scheduled_at = INF  # time of this cell's live entry in the supervisor's heap
        self.budget: RestartBudget | None = None  # allocated by the first failure
        self.restarts = 0
        self.last_error: str | None = None
        self.last_traceback: str | None = None
        self.recent_errors: deque[ErrorRecord] | None = None  # allocated by the first crash
        self.info: ActorInfo | None = None  # allocated by the actor's first ``describe``
        # One float shared by a batch of cells started together saves 24 bytes per idle cell.
        self.last_activity = time.time() if created_at is None else created_at
        self.stop_requested = False
        self.exit_requested = False
        self.probe = False
        self.start_batch: StartBatch | None = None

    def __repr__(self) -> str:
        return f"<ActorCell {self.id} {self.state.value}>"

    def __lt__(self, other: ActorCell[object]) -> bool:
        return self.id < other.id  # breaks ties in the supervisor's deadline heap

    def items(self) -> tuple[tuple[str, object], ...]:
        """Log fields of the child, so the cell itself serves as its task's log context."""
        return (("actor", self.id), ("kind", self.spec.kind))

    def remember_error(self, at: float) -> None:
        """Add the crash just recorded in ``last_error``/``last_traceback`` to the ring."""
        ring = self.recent_errors
        if ring is None:
            ring = self.recent_errors = deque(maxlen=RECENT_ERRORS)
        ring.append(ErrorRecord(at, self.last_error or "", self.last_traceback))

    def describe(self, *, provider: str | None = None, last_sync_at: float | None = None) -> None:
        """Update what the monitor shows about the actor; a None argument keeps its value."""
        info = self.info
        if info is None:
            info = self.info = ActorInfo()
        if provider is not None:
            info.provider = provider
        if last_sync_at is not None:
            info.last_sync_at = last_sync_at

    # -- sending ---------------------------------------------------------------------------

    def send_nowait(self, message: M) -> None:
        """Append ``message`` to the mailbox; raises MailboxFull or ActorUnavailable."""
        state = self.state
        if state is _CLOSED[0] or state is _CLOSED[1] or state is _CLOSED[2] or self.stop_requested:
            raise ActorUnavailable(f"actor {self.id} is {state.value}")
        mailbox = self.mailbox
        if mailbox is None:
            mailbox = self.mailbox = deque()
        elif len(mailbox) >= self.host.mailbox_capacity:
            raise MailboxFull(f"mailbox of actor {self.id} holds {len(mailbox)} messages")
        mailbox.append(message)
        waiter = self.waiter  # wake(), inlined: this is the hot path of every send
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def post_nowait(self, key: Hashable, item: object = None) -> None:
        """Ask for ``on_posts(key, items)``; posts of a key not yet taken coalesce into one.

        ``item`` (e.g. a stream entry id to acknowledge later) joins the key's items; None adds
        nothing. Never raises MailboxFull: pending work is bounded by the number of keys.
        """
        state = self.state
        if state is _CLOSED[0] or state is _CLOSED[1] or state is _CLOSED[2] or self.stop_requested:
            raise ActorUnavailable(f"actor {self.id} is {state.value}")
        posts = self.posts
        if posts is None:
            posts = self.posts = {}
        items = posts.get(key)
        if items is None:
            items = posts[key] = []
        if item is not None:
            items.append(item)
        self.wake()

    def take_posts_nowait(self) -> tuple[Hashable, list[object]] | None:
        """The oldest pending key and all its items, removed; None when nothing is pending."""
        posts = self.posts
        if not posts:
            return None
        key = next(iter(posts))
        items = posts.pop(key)
        if not posts:
            self.posts = None  # an idle actor keeps no dict
        return key, items

    @property
    def mailbox_depth(self) -> int:
        """Messages and distinct pending post keys waiting to be handled."""
        mailbox, posts = self.mailbox, self.posts
        return (0 if mailbox is None else len(mailbox)) + (0 if posts is None else len(posts))

    # -- deadlines ---------------------------------------------------------------------------

    def set_deadline(self, name: str, at: float) -> None:
        """Arm (or move) the deadline ``name`` to loop time ``at``."""
        deadlines = self.deadlines
        if deadlines is None:
            deadlines = self.deadlines = {}
        deadlines[name] = at
        self.set_wake_at(min(deadlines.values()))

    def cancel_deadline(self, name: str) -> None:
        """Disarm the deadline ``name``; unknown names are ignored."""
        deadlines = self.deadlines
        if deadlines is None or deadlines.pop(name, None) is None:
            return
        if deadlines:
            self.set_wake_at(min(deadlines.values()))
        else:
            self.deadlines = None
            self.wake_at = INF

    def pop_due_deadline(self, now: float) -> str | None:
        """Disarm and return the name of the earliest deadline at or before ``now``, if any."""
        deadlines = self.deadlines
        if deadlines is None or self.wake_at > now:
            return None
        name = min(deadlines, key=deadlines.__getitem__)
        self.cancel_deadline(name)
        return name

    def clear_deadlines(self) -> None:
        """Forget every deadline (a new incarnation arms its own)."""
        self.deadlines = None
        self.wake_at = INF

    def set_wake_at(self, at: float) -> None:
        """Ask to be woken at loop time ``at`` (``inf``: only by a message or a stop)."""
        self.wake_at = at
        # A later time needs no new entry: the live one re-schedules when it comes due.
        if at < self.scheduled_at:
            self.scheduled_at = at
            self.host.schedule_wake(self, at)

    # -- waiting -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Wake the child if it is waiting."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def request_stop(self) -> None:
        """Ask the child to finish its current step, run on_stop and exit."""
        self.stop_requested = True
        self.wake()
