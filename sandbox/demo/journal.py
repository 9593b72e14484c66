"""The lag journal: the people's edits awaiting their ``changes`` row, and the lags measured.

Invariants:
- only edits of the demo's own accounts made while ``recording`` are journaled (seeding and the
  settling phase are not the workload);
- an edit's lag is the ``created_at`` of the first ``changes`` row of that event at or after the
  edit time, minus the edit time; since the edit time is taken before the emulator applied it,
  and ``created_at`` is the commit's transaction start, a lag never undercounts;
- an edit that never produces a change row (renamed to the title it had, or created and deleted
  between two syncs) stays pending and is reported as unobserved, never guessed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from store.db import PgPool

_LAG_SQL = """
SELECT p.i, min(c.created_at) AS first_change
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS p(a, e, at, i)
JOIN changes c ON c.account_id = p.a AND c.event_id = p.e AND c.created_at >= p.at
GROUP BY p.i
"""


@dataclass(slots=True)
class EditJournal:
    """Edits of the simulated people awaiting their change row, and the lags measured."""

    accounts: dict[str, uuid.UUID] = field(default_factory=dict)  # user email -> account id
    recording: bool = False
    edits: int = 0
    errors: int = 0  # edits an emulator refused
    pending: list[tuple[uuid.UUID, str, datetime]] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)

    def record(self, email: str, event_id: str, at: datetime) -> None:
        """Remember one edit of ``event_id`` made at ``at`` (ignored unless recording)."""
        account_id = self.accounts.get(email)
        if self.recording and account_id is not None:
            self.edits += 1
            self.pending.append((account_id, event_id, at))

    def percentile(self, fraction: float) -> float | None:
        """Nearest-rank percentile of the lags measured so far, or None before the first."""
        if not self.lags_ms:
            return None
        ordered = sorted(self.lags_ms)
        rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
        return ordered[rank - 1]


async def measure_lags(pool: PgPool, journal: EditJournal) -> None:
    """Match pending edits with their first change row; keep the unmatched ones pending."""
    pending = list(journal.pending)  # the people may append while we query
    if not pending:
        return
    rows = await pool.fetch(
        _LAG_SQL, [p[0] for p in pending], [p[1] for p in pending], [p[2] for p in pending]
    )
    matched: dict[int, datetime] = {int(r["i"]) - 1: r["first_change"] for r in rows}
    for index, first_change in matched.items():
        lag = (first_change - pending[index][2]).total_seconds() * 1000.0
        journal.lags_ms.append(max(0.0, lag))
    kept = [p for i, p in enumerate(pending) if i not in matched]
    journal.pending = kept + journal.pending[len(pending) :]
