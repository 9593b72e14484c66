"""The base class of every actor: lifecycle hooks and the services the runtime offers them.

An actor instance lives for one incarnation: the supervisor builds a new one from the spec on
every restart, so ``on_start`` must rebuild state from storage. Handlers run one at a time in
the child's own task, so an actor never needs a lock for its own state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from actors.cell import ActorCell

M = TypeVar("M")


class Actor(Generic[M]):
    """Subclass and override the ``on_*`` hooks; keep ``__slots__`` to stay small."""

    __slots__ = ("_cell",)

    _cell: ActorCell[M]

    @property
    def id(self) -> str:
        """The child id this actor runs under (an account id for account actors)."""
        return self._cell.id

    async def on_start(self) -> None:
        """Initialise from storage; raising here fails the (re)start."""

    async def on_message(self, message: M) -> None:
        """Handle one message from the mailbox."""

    async def on_posts(self, key: Hashable, items: list[object]) -> None:
        """Handle every post of ``key`` that arrived since the last time (coalesced)."""

    async def on_deadline(self, name: str) -> None:
        """Handle a deadline armed with ``set_deadline`` or ``set_timer`` that has passed."""

    async def on_stop(self) -> None:
        """Finish cleanly when asked to stop (not called after a crash or a cancellation)."""

    def set_deadline(self, name: str, at: float) -> None:
        """Arm deadline ``name`` at event-loop time ``at``, replacing an earlier one."""
        self._cell.set_deadline(name, at)

    def set_timer(self, name: str, delay_s: float) -> None:
        """Arm deadline ``name`` ``delay_s`` seconds from now."""
        self._cell.set_deadline(name, asyncio.get_running_loop().time() + delay_s)

    def cancel_deadline(self, name: str) -> None:
        """Disarm deadline ``name``."""
        self._cell.cancel_deadline(name)

    def post_self_nowait(self, key: Hashable, item: object = None) -> None:
        """Post to this actor's own mailbox (coalesced by key, handled after the current step)."""
        self._cell.post_nowait(key, item)

    def set_status(self, status: str | None) -> None:
        """A short free-form status shown beside the state (e.g. ``syncing``)."""
        self._cell.status = status

    def stop_nowait(self) -> None:
        """Exit normally after the current handler; the restart type decides what follows."""
        self._cell.exit_requested = True
