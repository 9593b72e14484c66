"""The outbox gauges' figures, read from Postgres at most every ``max_age_s`` (a scrape storm
costs one query), by the scrape handler before it renders.

Invariants:
- one query at a time: concurrent scrapes wait for the one in flight instead of adding theirs;
- a failed or slow query (``timeout_s``) keeps the last figures and logs; it never fails the
  scrape, and no figures are reported until a first query succeeded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from store.db import Queryable
from store.outbox import status
from supervisor.metric_collectors import OutboxCounts

log = structlog.get_logger("metrics.outbox")


@dataclass(slots=True)
class OutboxFigures:
    """Cached ``OutboxCounts`` of every account."""

    pool: Queryable
    max_age_s: float = 5.0
    timeout_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    counts: OutboxCounts | None = None
    _read_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def stale(self) -> bool:
        """Whether the next scrape should read the figures again."""
        return self._read_at is None or self.clock() - self._read_at >= self.max_age_s

    async def refresh_if_stale(self) -> OutboxCounts | None:
        """Read the figures unless fresh ones are at hand; the figures either way."""
        async with self._lock:
            if not self.stale():
                return self.counts
            self._read_at = self.clock()  # a failure also waits max_age_s before the next try
            try:
                async with asyncio.timeout(self.timeout_s):
                    current = await status(self.pool)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox figures unavailable", error=type(exc).__name__)
                return self.counts
            age = current.oldest_pending_age
            self.counts = OutboxCounts(
                by_state={state.value: count for state, count in current.counts.items()},
                oldest_pending_age_s=None if age is None else age.total_seconds(),
            )
            return self.counts
