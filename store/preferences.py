"""Per-account sync preferences (``account_preferences``): auto-sync, frequency, sync window.

Invariants:
- an account without a row has ``default_preferences``; a ``None`` window means the replica's
  configured one (``IW_SYNC_WINDOW_*_DAYS``);
- ``save_preferences`` bumps ``accounts.updated_at`` in the same statement, so a replica that
  watches ``updated_at`` sees the change; rows go with their account (ON DELETE CASCADE);
- the bounds below are the table's CHECKs, so a checked ``Preferences`` always stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from store.db import Queryable

MIN_FREQUENCY_MINUTES = 1
MAX_FREQUENCY_MINUTES = 1440
MAX_WINDOW_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Preferences:
    """How an account wants to be synced; ``None`` windows defer to the replica's settings."""

    auto_sync: bool = True
    sync_frequency_minutes: int = 15
    sync_window_back_days: int | None = None
    sync_window_ahead_days: int | None = None

    def __post_init__(self) -> None:
        if not MIN_FREQUENCY_MINUTES <= self.sync_frequency_minutes <= MAX_FREQUENCY_MINUTES:
            raise ValueError(
                f"sync_frequency_minutes must be between {MIN_FREQUENCY_MINUTES}"
                f" and {MAX_FREQUENCY_MINUTES}"
            )
        back, ahead = self.sync_window_back_days, self.sync_window_ahead_days
        if back is not None and not 0 <= back <= MAX_WINDOW_DAYS:
            raise ValueError(f"sync_window_back_days must be between 0 and {MAX_WINDOW_DAYS}")
        if ahead is not None and not 1 <= ahead <= MAX_WINDOW_DAYS:
            raise ValueError(f"sync_window_ahead_days must be between 1 and {MAX_WINDOW_DAYS}")


def default_preferences(sync_poll_s: float) -> Preferences:
    """The preferences of an account that never set any: auto-sync every ``sync_poll_s``."""
    minutes = min(MAX_FREQUENCY_MINUTES, max(MIN_FREQUENCY_MINUTES, round(sync_poll_s / 60)))
    return Preferences(auto_sync=True, sync_frequency_minutes=minutes)


async def load_preferences(conn: Queryable, account_ids: Sequence[UUID]) -> dict[UUID, Preferences]:
    """The stored preferences of those of ``account_ids`` that have any (others use defaults)."""
    rows = await conn.fetch(
        "SELECT account_id, auto_sync, sync_frequency_minutes, sync_window_back_days,"
        " sync_window_ahead_days FROM account_preferences WHERE account_id = ANY($1::uuid[])",
        list(account_ids),
    )
    return {
        row["account_id"]: Preferences(
            auto_sync=row["auto_sync"],
            sync_frequency_minutes=row["sync_frequency_minutes"],
            sync_window_back_days=row["sync_window_back_days"],
            sync_window_ahead_days=row["sync_window_ahead_days"],
        )
        for row in rows
    }


async def save_preferences(conn: Queryable, account_id: UUID, preferences: Preferences) -> bool:
    """Store the account's preferences and bump its ``updated_at``; False if no such account."""
    saved = await conn.fetchval(
        "WITH touched AS (UPDATE accounts SET updated_at = now() WHERE id = $1 RETURNING id)"
        " INSERT INTO account_preferences AS p (account_id, auto_sync, sync_frequency_minutes,"
        " sync_window_back_days, sync_window_ahead_days)"
        " SELECT id, $2, $3, $4, $5 FROM touched"
        " ON CONFLICT (account_id) DO UPDATE SET auto_sync = excluded.auto_sync,"
        " sync_frequency_minutes = excluded.sync_frequency_minutes,"
        " sync_window_back_days = excluded.sync_window_back_days,"
        " sync_window_ahead_days = excluded.sync_window_ahead_days, updated_at = now()"
        " RETURNING p.account_id",
        account_id,
        preferences.auto_sync,
        preferences.sync_frequency_minutes,
        preferences.sync_window_back_days,
        preferences.sync_window_ahead_days,
    )
    return saved is not None
