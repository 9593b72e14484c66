"""Account actors: one per connected account, keeping its calendars in sync with Postgres.

``account_spec`` is the one child spec every account actor of a replica shares; its restart
type is TRANSIENT so an actor that stops normally (stale epoch) is not started again, while a
crash restarts it from stored state.
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
