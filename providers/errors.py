"""The one error taxonomy every provider maps its failures to; the actor acts on ``kind`` alone.

Invariants:
- a provider client raises only ``ProviderError`` subclasses (never aiohttp or google-auth
  errors), so the actor needs one ``except`` and one decision table;
- messages carry status codes and provider reason strings, never tokens or request bodies;
- no retry happens inside a client: ``retryable`` and ``retry_after_s`` tell the actor what
  its own retry policy may do.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What the actor does about a failure."""

    AUTH_REVOKED = "auth_revoked"  # the refresh token is dead: park until re-authorized
    UNAUTHORIZED = "unauthorized"  # the access token was refused: refresh once, then retry
    THROTTLED = "throttled"  # slow down; honour retry_after_s when given
    SYNC_STATE_EXPIRED = "sync_state_expired"  # the delta token is gone: full resync
    NOT_FOUND = "not_found"  # the calendar, event or channel does not exist (any more)
    CONFLICT = "conflict"  # etag mismatch or id already used
    TRANSIENT = "transient"  # 5xx, timeouts, connection errors: retry with backoff
    PERMANENT = "permanent"  # a request the provider will never accept: do not retry


_RETRYABLE = frozenset({ErrorKind.UNAUTHORIZED, ErrorKind.THROTTLED, ErrorKind.TRANSIENT})


class ProviderError(Exception):
    """A provider call failed; ``kind`` says what to do about it."""

    kind: ErrorKind = ErrorKind.PERMANENT

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        reason: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later without anything else changing."""
        return self.kind in _RETRYABLE

    def __str__(self) -> str:
        parts = [self.provider]
        if self.status is not None:
            parts.append(str(self.status))
        if self.reason:
            parts.append(self.reason)
        return f"{super().__str__()} ({', '.join(parts)})"


class AuthRevoked(ProviderError):
    """``invalid_grant`` and its kin: the user must connect the account again."""

    kind = ErrorKind.AUTH_REVOKED


class Unauthorized(ProviderError):
    """The access token was refused (401)."""

    kind = ErrorKind.UNAUTHORIZED


class Throttled(ProviderError):
    """Rate limited (429, Google 403 rate-limit reasons, Graph 429/503 with Retry-After)."""

    kind = ErrorKind.THROTTLED


class SyncStateExpired(ProviderError):
    """The delta/sync token is no longer valid (Google 410, Graph 410/syncStateNotFound)."""

    kind = ErrorKind.SYNC_STATE_EXPIRED


class NotFound(ProviderError):
    """The resource does not exist (404, or 410 on an already-deleted event)."""

    kind = ErrorKind.NOT_FOUND


class Conflict(ProviderError):
    """An etag precondition failed (412) or an id is taken (409)."""

    kind = ErrorKind.CONFLICT


class Transient(ProviderError):
    """Server errors, timeouts, dropped connections and malformed answers: try again later."""

    kind = ErrorKind.TRANSIENT


class Permanent(ProviderError):
    """The provider refused the request for good (400, 403 other than rate limits, ...)."""

    kind = ErrorKind.PERMANENT


class PushUnsupported(Permanent):
    """The provider refuses a channel on this resource (Google's
    ``pushNotSupportedForRequestedResource``): it can only be polled."""


class InvalidNotification(Exception):
    """A webhook request that is not a genuine notification for a channel we hold."""
