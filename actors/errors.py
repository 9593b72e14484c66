"""Exceptions the actor runtime raises to its callers."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of the runtime's errors."""


class MailboxFull(ActorError):
    """``send_nowait`` found the mailbox at capacity; the message was not taken.

    The sender keeps the message: webhook messages stay in their Redis stream and are
    delivered again, so refusing is safe, while an unbounded mailbox is not.
    """


class ActorUnavailable(ActorError):
    """The actor is quarantined, stopped or unknown; it takes no messages."""


class ChildStartError(ActorError):
    """A child's ``on_start`` failed on its first start; the child was not added."""


class DuplicateChild(ActorError):
    """A child with this id is already supervised."""


class SupervisorEscalation(ActorError):
    """A child whose spec escalates spent its restart budget; the supervisor shut down."""

    def __init__(self, child_id: str, reason: str) -> None:
        super().__init__(f"child {child_id!r} exhausted its restart budget: {reason}")
        self.child_id = child_id
        self.reason = reason
