"""Which accounts a provider throttled lately, per shared budget (a sorted set in Redis), and
whether that is reason to slow everyone sharing the budget (pure).

One account throttled is that account's business (its per-user quota): it backs off alone.
Several distinct accounts throttled within a window is the project's quota running out, which
every replica's callers share: then the shared bucket is penalized.

Invariants:
- ``note`` records the account (its latest time only), forgets those older than the window
  and counts the rest in one MULTI round trip, on the budget's own key slot;
- ``shared_penalty_s`` is pure: an account's own budget takes the provider's Retry-After; a
  shared one only once ``quorum`` distinct accounts were throttled within the window, by the
  Retry-After or, without one, ``base_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from cluster.keys import throttled_accounts_key
from cluster.rate_limit import UNAVAILABLE_ERRORS, RateLimiterUnavailable, TokenBucket


def shared_penalty_s(
    *,
    own_budget: bool,
    throttled_accounts: int,
    quorum: int,
    retry_after_s: float | None,
    base_s: float,
) -> float | None:
    """How long to block a budget after a throttled answer; None: leave it alone."""
    if own_budget:
        return retry_after_s or None
    if throttled_accounts < quorum:
        return None
    return retry_after_s or base_s


class ThrottleWitness:
    """The accounts throttled on one budget within ``window_s`` (shared by replicas)."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        window_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = throttled_accounts_key(name)
        self.window_s = window_s
        self._redis = redis
        self._clock = clock

    async def note(self, account_id: str) -> int:
        """Record ``account_id`` throttled now; how many distinct accounts were in the window."""
        now = self._clock()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {account_id: now})
            pipe.zremrangebyscore(self.key, "-inf", now - self.window_s)
            pipe.zcard(self.key)
            pipe.expire(self.key, max(1, int(self.window_s * 2)))
            *_, count, _ = await pipe.execute()
        return int(count)


class Budget:
    """A request budget as the actors use it: the bucket they draw on, and what a throttled
    answer does to it (``witness`` None: the budget is one account's own)."""

    def __init__(
        self,
        bucket: TokenBucket,
        witness: ThrottleWitness | None,
        *,
        quorum: int,
        base_s: float,
    ) -> None:
        self.bucket = bucket
        self.witness = witness
        self.quorum = quorum
        self.base_s = base_s

    async def acquire(self, tokens: int = 1, *, max_wait_s: float) -> None:
        """Take tokens from the bucket (``TokenBucket.acquire``)."""
        await self.bucket.acquire(tokens, max_wait_s=max_wait_s)

    async def throttled(self, account_id: str, retry_after_s: float | None) -> float | None:
        """The provider throttled ``account_id``: block the bucket if ``shared_penalty_s``
        says so; the seconds blocked, or None. RateLimiterUnavailable if Redis is not."""
        count = 1
        if self.witness is not None:
            try:
                count = await self.witness.note(account_id)
            except UNAVAILABLE_ERRORS as exc:
                raise RateLimiterUnavailable(f"throttle witness: {type(exc).__name__}") from exc
        penalty = shared_penalty_s(
            own_budget=self.witness is None,
            throttled_accounts=count,
            quorum=self.quorum,
            retry_after_s=retry_after_s,
            base_s=self.base_s,
        )
        if penalty is not None:
            await self.bucket.penalize(penalty)
        return penalty
