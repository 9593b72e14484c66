"""The one mapping from what a step raised to the outcome the core is told.

Invariants:
- revoked consent is ``Revoked`` (checked before ``ProviderError``, which it is a kind of); a
  stale epoch is ``Fenced``; a step needing credentials this incarnation lacks is ``Unloaded``;
  any other provider error is ``ProviderFailed`` with its kind and Retry-After; anything else is
  ``Crashed`` (the core answers with ``Raise`` and the shell re-raises the original error);
- the outcome carries the error's message only, never the exception, so the core stays plain.
"""

from __future__ import annotations

from actors.account.commands import Crashed, Failure, Fenced, ProviderFailed, Revoked, Unloaded
from providers.errors import AuthRevoked, ProviderError
from store.fencing import StaleEpoch


class Parked(Exception):
    """The account cannot call its provider until something outside the actor changes."""


def outcome_of(error: Exception) -> Failure:
    """The outcome a step that raised ``error`` reports."""
    if isinstance(error, AuthRevoked):
        return Revoked(str(error))
    if isinstance(error, StaleEpoch):
        return Fenced()
    if isinstance(error, Parked):
        return Unloaded()
    if isinstance(error, ProviderError):
        return ProviderFailed(error.kind, str(error), error.retry_after_s)
    return Crashed()
