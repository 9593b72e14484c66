"""How a supervisor builds and restarts a kind of child.

One spec serves every child of a kind (all account actors share one), so tens of thousands of
children cost one spec object, not one each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from actors.policy import OnExhausted, RestartType

if TYPE_CHECKING:
    from actors.actor import Actor

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class ChildSpec(Generic[M]):
    """``factory(child_id)`` builds a fresh actor for every (re)start."""

    factory: Callable[[str], Actor[M]]
    restart: RestartType = RestartType.PERMANENT
    on_exhausted: OnExhausted = OnExhausted.QUARANTINE
    kind: str = "actor"  # shown by the monitor and in logs
