"""The cluster-wide maintenance lease in Redis: the I/O edge (timing lives in ``ShardLease``).

Layout: ``iw:maintenance:lease``, a string holding the holder token ``<replica id>/<nonce>``
with a PX expiry.

Invariants:
- taken only if absent (``SET NX PX``); renewed and released only by scripts that first compare
  the holder token, so a replica never extends or deletes a lease it lost;
- the nonce makes every ``MaintenanceLease`` a holder of its own: a restarted replica (or a
  second scheduler in one process) cannot renew what another incarnation held;
- Redis errors propagate (the caller treats them as a failed renewal).
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from cluster.keys import MAINTENANCE_LEASE_KEY
from cluster.leases import RELEASE_SCRIPT, RENEW_SCRIPT


class MaintenanceLease:
    """One holder's calls on the maintenance lease; each is one round trip."""

    def __init__(
        self, redis: Redis, replica_id: str, *, ttl_s: float, key: str = MAINTENANCE_LEASE_KEY
    ) -> None:
        if "/" in replica_id:
            raise ValueError(f"a replica id cannot contain '/': {replica_id!r}")
        self.redis = redis
        self.key = key
        self.holder = f"{replica_id}/{secrets.token_hex(8)}"
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def try_take(self) -> bool:
        """Take the lease if nobody holds it."""
        return bool(await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend the lease by one TTL if still ours; False if lost (taken or expired)."""
        return bool(await self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    async def release(self) -> bool:
        """Give the lease up if still ours; False if it was not."""
        return bool(await self._release(keys=[self.key], args=[self.holder]))

    async def current_holder(self) -> str | None:
        """The holder token in Redis now, or None when the lease is free."""
        value = await self.redis.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
