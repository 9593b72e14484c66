"""Opaque page cursors: the keyset position after a page's last item, base64url JSON.

Invariants: a cursor names its listing (``kind``), so one from another listing is refused;
``decode_*`` raise ``CursorError`` (never echoing the cursor) for anything they did not make.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

import orjson

_ACCOUNTS = "accounts"
_DEAD_LETTERS = "dead-letters"


class CursorError(ValueError):
    """The cursor is not one this API issued for this listing."""


def _encode(payload: list[object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode(cursor: str, kind: str, size: int) -> list[object]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise CursorError("invalid cursor") from None
    if not isinstance(payload, list) or len(payload) != size or payload[0] != kind:
        raise CursorError("invalid cursor")
    return payload


def encode_accounts(created_at: datetime, account_id: UUID) -> str:
    """The cursor after the account created at ``created_at`` with id ``account_id``."""
    return _encode([_ACCOUNTS, created_at.isoformat(), str(account_id)])


def decode_accounts(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) position of an accounts cursor."""
    _, created, account = _decode(cursor, _ACCOUNTS, 3)
    try:
        if not isinstance(created, str) or not isinstance(account, str):
            raise ValueError
        moment = datetime.fromisoformat(created)
        if moment.utcoffset() is None:
            raise ValueError
        # In UTC, as Postgres compares it: a forged offset must not carry it out of range.
        return moment.astimezone(UTC), UUID(account)
    except (ValueError, OverflowError):
        raise CursorError("invalid cursor") from None


def encode_dead_letters(item_id: int) -> str:
    """The cursor after dead letter ``item_id``."""
    return _encode([_DEAD_LETTERS, item_id])


def decode_dead_letters(cursor: str) -> int:
    """The item id position of a dead-letters cursor."""
    _, item_id = _decode(cursor, _DEAD_LETTERS, 2)
    if not isinstance(item_id, int) or isinstance(item_id, bool) or not 0 <= item_id < 2**63:
        raise CursorError("invalid cursor")
    return item_id
