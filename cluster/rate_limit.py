"""Token buckets in Redis shared by every replica, so their sum stays under a provider's quota.

Every provider call first takes a token from its bucket(s): one per provider project (Google
10,000 requests/min/project, Graph 10,000 per 10 minutes per app per mailbox) and, where the
quota is per user or mailbox, one per account (``google:user:<account-id>``). A bucket holds at
most ``burst`` tokens and refills continuously at ``rate_per_s``.

Layout: one hash per bucket, key ``iw:{ratelimit:<name>}`` (the braces are a Redis Cluster hash
tag, see ``docs/streams.md``), fields ``tokens`` (a float), ``updated_ms`` (Redis time the tokens
were computed for) and ``blocked_until_ms`` (Redis time before which nothing is granted).

Invariants:
- Atomic: the refill, the check and the take (and a penalty) happen in ONE Lua script on one
  key, so concurrent callers on any number of replicas can never both spend the same token.
- One clock: time comes from Redis ``TIME`` inside the script, never from a replica's clock;
  ``updated_ms`` never moves backwards, so a Redis clock step back (e.g. a failover) grants
  nothing extra, it only pauses the refill.
- Over any interval, a bucket never grants more than ``burst + rate_per_s * elapsed`` tokens.
- A refused ``try_acquire`` takes nothing; its answer is the time until enough tokens exist
  (a lower bound when others are waiting too).
- ``penalize(seconds)`` (a provider's Retry-After) blocks every holder of the bucket on every
  replica until the Redis time has passed, and empties the bucket: once the block ends, traffic
  resumes at ``rate_per_s``, not with a burst that would be throttled again.
- Idle buckets vanish: ``PEXPIRE`` is set to when the bucket would be full again (plus a
  margin), and a missing bucket reads as full, so expiry never changes an answer.
- Every replica must use the same ``BucketSpec`` for a name; the spec of each call is applied.
- Redis unreachable raises ``RateLimiterUnavailable``: callers treat it as a transient failure
  (retry with backoff), never as permission to call the provider.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from cluster.keys import bucket_key

# Slack added to an idle bucket's lifetime beyond the time it needs to be full again.
_EXPIRY_MARGIN_MS = 1000
# The smallest wait a refusal reports (one microsecond).
_MIN_WAIT_S = 1e-6

# Failures that mean "Redis is not there right now", as opposed to a bug (a script error).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a failover demoted the primary we talk to
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.MasterDownError,
    OSError,
)


class RateLimited(Exception):
    """Tokens would not be available within the caller's ``max_wait_s``; nothing was taken."""

    def __init__(self, wait_s: float, name: str = "") -> None:
        label = f"rate limit {name!r}" if name else "rate limit"
        super().__init__(f"{label}: next tokens in {wait_s:.3f}s")
        self.wait_s = wait_s
        self.name = name


class RateLimiterUnavailable(Exception):
    """Redis could not be asked; a transient failure (the cause is chained)."""


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A bucket refilling at ``rate_per_s`` tokens per second, holding at most ``burst``."""

    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if isinstance(self.rate_per_s, bool) or not isinstance(self.rate_per_s, int | float):
            raise TypeError(f"rate_per_s must be a number, not {type(self.rate_per_s).__name__}")
        if not math.isfinite(self.rate_per_s) or self.rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be finite and > 0, got {self.rate_per_s!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int):
            raise TypeError(f"burst must be an int, not {type(self.burst).__name__}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")

    @classmethod
    def per_period(cls, requests: int, period_s: float, *, burst: int | None = None) -> BucketSpec:
        """``requests`` per ``period_s`` (e.g. 10,000 per 600 s); burst defaults to ``requests``."""
        if period_s <= 0 or not math.isfinite(period_s):
            raise ValueError(f"period_s must be finite and > 0, got {period_s!r}")
        return cls(rate_per_s=requests / period_s, burst=requests if burst is None else burst)


def refill(tokens: float, elapsed_s: float, spec: BucketSpec) -> float:
    """Tokens after ``elapsed_s`` seconds of refill, capped at ``spec.burst``.

    A negative elapsed time (a clock stepping back) refills nothing. The Lua script below does
    the same arithmetic in milliseconds.
    """
    return min(float(spec.burst), tokens + max(0.0, elapsed_s) * spec.rate_per_s)


def wait_for(tokens: float, wanted: int, spec: BucketSpec) -> float:
    """Seconds of refill until ``tokens`` reach ``wanted`` (0.0 when they already do)."""
    return max(0.0, (wanted - tokens) / spec.rate_per_s)


# KEYS[1] bucket key.
# ARGV[1] "take" or "penalize"; ARGV[2] rate (tokens per ms); ARGV[3] burst;
# ARGV[4] tokens wanted ("take") or penalty in ms ("penalize").
# ARGV[5] expiry margin in ms.
# Returns {granted (1 or 0), wait in ms as a string} (a Lua number would be truncated to an
# integer); a penalty returns {1, "0"}.
_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local op = ARGV[1]
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

local state = redis.call('HMGET', key, 'tokens', 'updated_ms', 'blocked_until_ms')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
local blocked = tonumber(state[3]) or 0
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
-- Refill up to now; updated never moves backwards (a clock step back refills nothing).
if now > updated then
  tokens = tokens + (now - updated) * rate
  updated = now
end
if tokens > burst then tokens = burst end

local granted = 1
local wait = 0
if op == 'penalize' then
  local until_ms = now + math.max(0, amount)
  if until_ms > blocked then blocked = until_ms end
  -- Empty the bucket and start its refill when the block ends.
  tokens = 0
  if blocked > updated then updated = blocked end
else
  local start = math.max(updated, blocked, now)
  if start > now or tokens < amount then
    granted = 0
    wait = (start - now) + math.max(0, amount - tokens) / rate
  else
    tokens = tokens - amount
  end
end

redis.call('HSET', key, 'tokens', string.format('%.17g', tokens),
  'updated_ms', string.format('%.17g', updated),
  'blocked_until_ms', string.format('%.17g', blocked))
-- Gone once it would be full again (a missing bucket reads as full).
local full_at = math.max(updated, blocked) + (burst - tokens) / rate
local ttl = math.max(0, math.ceil(full_at - now)) + tonumber(ARGV[5])
redis.call('PEXPIRE', key, string.format('%d', ttl))
return {granted, string.format('%.3f', math.ceil(wait * 1000) / 1000)}
"""


class TokenBucket:
    """One named bucket in Redis; any number of objects (replicas) may share a name."""

    def __init__(self, redis: Redis, name: str, spec: BucketSpec) -> None:
        self.name = name
        self.key = bucket_key(name)
        self.spec = spec
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        # Callers of this object that must wait queue here (FIFO), so one of them at a time asks
        # Redis again: thousands of actors each re-asking at the refill interval swamp Redis
        # and the event loop alike. Share one object per name within a process.
        self._waiters = asyncio.Lock()

    async def _run(self, op: str, amount: float) -> float:
        args = (op, repr(self.spec.rate_per_s / 1000.0), self.spec.burst, repr(amount))
        try:
            raw: Any = await self._script(
                keys=[self.key], args=[*args, _EXPIRY_MARGIN_MS], client=self._redis
            )
        except UNAVAILABLE_ERRORS as exc:
            raise RateLimiterUnavailable(
                f"rate limit {self.name!r}: Redis unavailable ({type(exc).__name__}: {exc})"
            ) from exc
        granted, wait_ms = raw
        if int(granted) == 1:
            return 0.0
        text = wait_ms.decode() if isinstance(wait_ms, bytes) else str(wait_ms)
        # Refused means a positive wait, even when it rounds to nothing.
        return max(float(text) / 1000.0, _MIN_WAIT_S)

    def _check_tokens(self, tokens: int) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise TypeError(f"tokens must be an int, not {type(tokens).__name__}")
        if not 1 <= tokens <= self.spec.burst:
            raise ValueError(f"tokens must be within 1..{self.spec.burst}, got {tokens}")

    async def try_acquire(self, tokens: int = 1) -> float:
        """Take ``tokens`` and return 0.0, or take nothing and return the seconds to wait."""
        self._check_tokens(tokens)
        return await self._run("take", tokens)

    async def acquire(self, tokens: int = 1, *, max_wait_s: float) -> None:
        """Take ``tokens``, sleeping as told; RateLimited if that would exceed ``max_wait_s``.

        Waits are re-asked after each sleep (others may have taken the refill); the total time
        spent waiting never exceeds ``max_wait_s``. Waiters of one object queue in order, and
        only the first asks Redis again.
        """
        self._check_tokens(tokens)
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError(f"max_wait_s must be finite and >= 0, got {max_wait_s!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        wait_s = await self._run("take", tokens)
        if wait_s <= 0.0:
            return
        if loop.time() + wait_s > deadline:
            raise RateLimited(wait_s, self.name)
        try:
            await asyncio.wait_for(self._waiters.acquire(), timeout=deadline - loop.time())
        except TimeoutError:
            raise RateLimited(wait_s, self.name) from None
        try:
            while True:
                wait_s = await self._run("take", tokens)
                if wait_s <= 0.0:
                    return
                if loop.time() + wait_s > deadline:
                    raise RateLimited(wait_s, self.name)
                await asyncio.sleep(wait_s)
        finally:
            self._waiters.release()

    async def penalize(self, seconds: float) -> None:
        """Block the bucket for everyone for ``seconds`` of Redis time, and empty it.

        A longer block already in place is kept. ``seconds`` <= 0 still empties the bucket.
        """
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be finite, got {seconds!r}")
        await self._run("penalize", max(0.0, seconds) * 1000.0)
