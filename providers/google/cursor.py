"""The opaque ``SyncPage.next_cursor`` for Google: everything needed to resume one sync round.

Invariants:
- a cursor pins the round's query (calendar, syncToken or timeMin/timeMax, page size) plus the
  pageToken, so a resumed round sends exactly the request the lost process would have sent
  (Google requires the same query on every page, providers.md A.2);
- ``encode`` and ``decode`` are pure inverses; ``decode`` raises ``ValueError`` on anything it
  did not produce (wrong version, wrong shape, not base64);
- the text is urlsafe base64 of compact JSON, without padding, safe to store and to log
  (it carries Google's page/sync tokens, which are not credentials).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.cursor_codec import pack, required_str, unpack

_VERSION = 1


@dataclass(frozen=True, slots=True)
class RoundQuery:
    """The fixed query of one sync round: incremental (``sync_token``) or full (the window)."""

    calendar_id: str
    page_size: int
    sync_token: str | None = None
    time_min: str | None = None  # RFC 3339, full sync only
    time_max: str | None = None

    def __post_init__(self) -> None:
        window = (self.time_min, self.time_max)
        incremental = self.sync_token is not None and window == (None, None)
        full = self.sync_token is None and None not in window
        if not (incremental or full):
            raise ValueError("a round is incremental (sync_token) or full (time_min, time_max)")
        if self.page_size < 1:
            raise ValueError("page_size must be positive")

    @property
    def full_sync(self) -> bool:
        """Whether the round started without a sync token."""
        return self.sync_token is None


@dataclass(frozen=True, slots=True)
class SyncCursor:
    """A round's query and the page token of its next page."""

    query: RoundQuery
    page_token: str


def encode(cursor: SyncCursor) -> str:
    """The cursor as compact urlsafe base64 text."""
    query = cursor.query
    payload: dict[str, Any] = {
        "c": query.calendar_id,
        "n": query.page_size,
        "p": cursor.page_token,
    }
    if query.sync_token is not None:
        payload["s"] = query.sync_token
    else:
        payload["a"] = query.time_min
        payload["b"] = query.time_max
    return pack(_VERSION, payload)


def _optional(payload: dict[str, Any], key: str) -> str | None:
    return None if payload.get(key) is None else required_str(payload, key)


def decode(text: str) -> SyncCursor:
    """The cursor ``encode`` produced; ValueError for anything else."""
    payload = unpack(text, _VERSION)
    page_size = payload.get("n")
    if not isinstance(page_size, int) or isinstance(page_size, bool):
        raise ValueError("cursor page size is not an integer")
    query = RoundQuery(
        calendar_id=required_str(payload, "c"),
        page_size=page_size,
        sync_token=_optional(payload, "s"),
        time_min=_optional(payload, "a"),
        time_max=_optional(payload, "b"),
    )
    return SyncCursor(query=query, page_token=required_str(payload, "p"))
