"""What a failed outbox write leads to: retry later, dead-letter, hold the account, or resolve.

Time is never read here: delays are seconds from the failure; randomness is a ``random.Random``.

The schedule, for the n-th failed attempt of an item (n = ``attempts`` before it + 1):
- ceiling = ``initial_s * 2 ** (n - 1)`` capped at ``max_s`` (1 s, 2 s, 4 s, ... 1 h);
- delay = ceiling / 2 + uniform(0, ceiling / 2) ("equal jitter"). Half is fixed, so the delay
  still doubles from one attempt to the next and never collapses towards zero as full jitter
  can; the random half spreads items (and accounts) that failed together so that they do not
  retry in step against a provider that is already struggling;
- a Retry-After is a floor: the delay is never shorter than the provider asked for.

Invariants:
- throttling and transient errors count as attempts; the attempt that reaches ``max_attempts``
  dead-letters the item with its error instead of scheduling another;
- a permanent error dead-letters at once: retrying a request the provider refuses is futile;
- only throttling and auth failures hold the whole account (``HoldAccount``); a transient
  error backs off the failing item alone, so its account's other sources go on;
- an auth failure is not the item's fault: it keeps its attempts and waits with the account
  until it is re-authorized;
- a conflict or a gone event is not retried as such: the rules of ``outbox.rules`` decide
  (``on_conflict``; a direct GET, then ``after_direct_get``).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from providers.errors import ErrorKind, ProviderError


class ErrorClass(enum.Enum):
    """The kinds of failure the outbox tells apart."""

    THROTTLED = "throttled"  # rate limited: hold the account, honour Retry-After
    TRANSIENT = "transient"  # 5xx, timeouts: back this item off
    AUTH = "auth"  # credentials refused even after a refresh: hold until re-authorized
    PERMANENT = "permanent"  # the provider will never accept this request
    CONFLICT = "conflict"  # the conditional write met a changed copy, or the create id is taken
    GONE = "gone"  # 404/410 on a write: confirm with a direct GET


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the retry rules need it."""

    error: ErrorClass
    message: str  # kept as the item's last error
    retry_after_s: float | None = None  # the provider's Retry-After, when it sent one


_FROM_KIND = {
    ErrorKind.AUTH_REVOKED: ErrorClass.AUTH,
    # The actor refreshes once on a 401 before asking here: a 401 that survives it is an auth
    # failure of the account, not of the item.
    ErrorKind.UNAUTHORIZED: ErrorClass.AUTH,
    ErrorKind.THROTTLED: ErrorClass.THROTTLED,
    ErrorKind.SYNC_STATE_EXPIRED: ErrorClass.TRANSIENT,  # not expected from a write; retry
    ErrorKind.NOT_FOUND: ErrorClass.GONE,
    ErrorKind.CONFLICT: ErrorClass.CONFLICT,
    ErrorKind.TRANSIENT: ErrorClass.TRANSIENT,
    ErrorKind.PERMANENT: ErrorClass.PERMANENT,
}


def classify(error: ProviderError) -> Failure:
    """The ``Failure`` of a provider client's error."""
    return Failure(_FROM_KIND[error.kind], str(error), error.retry_after_s)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff bounds and the attempt budget of one item."""

    initial_s: float = 1.0
    max_s: float = 3600.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def ceiling_s(self, failures: int) -> float:
        """The un-jittered delay after the ``failures``-th consecutive failure (1-based)."""
        if failures < 1:
            raise ValueError("failures is 1-based")
        # min() on the exponent first: 2.0 ** 10_000 would overflow before the cap applies.
        return min(self.max_s, self.initial_s * 2.0 ** min(failures - 1, 64))

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """The equal-jittered delay after the ``failures``-th consecutive failure."""
        ceiling = self.ceiling_s(failures)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class RetryItem:
    """Try this item again ``delay_s`` from now; the account's other work goes on."""

    attempts: int  # store as the item's attempts
    delay_s: float
    error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Stop trying: the item becomes DEAD_LETTER with ``error``."""

    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class HoldAccount:
    """No provider call for the whole account for ``delay_s`` (None: until re-authorized)."""

    delay_s: float | None
    item: RetryItem | DeadLetter | None  # what becomes of the failed item; None: left as is


@dataclass(frozen=True, slots=True)
class Resolve:
    """Not a retry: ``outbox.rules`` decides (CONFLICT: ``on_conflict``; GONE: a direct GET)."""

    error: ErrorClass


Decision = RetryItem | DeadLetter | HoldAccount | Resolve


def decide(failure: Failure, attempts: int, policy: RetryPolicy, rng: random.Random) -> Decision:
    """What follows a failed attempt of an item that had failed ``attempts`` times before.

    For a work unit that completes several items, pass the most ``attempts`` among them.
    """
    if attempts < 0:
        raise ValueError("attempts is >= 0")
    error = failure.error
    if error is ErrorClass.AUTH:
        return HoldAccount(None, None)
    if error in (ErrorClass.CONFLICT, ErrorClass.GONE):
        return Resolve(error)
    failures = attempts + 1
    if error is ErrorClass.PERMANENT:
        return DeadLetter(failures, failure.message)
    delay = max(policy.backoff_s(failures, rng), failure.retry_after_s or 0.0)
    item: RetryItem | DeadLetter
    if failures >= policy.max_attempts:
        item = DeadLetter(failures, failure.message)
    else:
        item = RetryItem(failures, delay, failure.message)
    if error is ErrorClass.THROTTLED:
        # Even when the item is given up, the account stays throttled: the next item would only
        # meet the same answer.
        return HoldAccount(delay, item)
    return item
