"""The calendar account actor: one per connected calendar account, keeping its calendars in
sync with Postgres and writing its outbox.

- ``messages``: what the actor is told (frozen dataclasses; ``message_of`` reads a stream entry);
- ``core``: its decisions without I/O (``AccountCore``), over ``commands`` (commands and
  outcomes) and ``failures`` (the one mapping from errors to outcomes);
- ``actor``: the shell that performs the core's commands; ``calls``, ``paging``, ``push``,
  ``outbound`` and ``outbound_steps`` are the I/O it performs;
- ``policy``: pure timing and cadence rules; ``context``: what every actor of a replica shares.

``account_spec`` is the child spec of a calendar kind (``kinds.calendar``); its restart type is
TRANSIENT so an actor that stops normally (stale epoch) is not started again, while a crash
restarts it from stored state.
"""

from __future__ import annotations

from actors.account.actor import AccountActor
from actors.account.context import AccountContext
from actors.policy import RestartType
from actors.spec import ChildSpec

__all__ = ["AccountActor", "AccountContext", "account_spec"]


def account_spec(ctx: AccountContext) -> ChildSpec[object]:
    """The child spec for account actors sharing ``ctx``."""
    return ChildSpec(
        factory=lambda _id: AccountActor(ctx), restart=RestartType.TRANSIENT, kind="account"
    )
