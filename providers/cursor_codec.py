"""The wire form every provider's opaque ``SyncPage.next_cursor`` shares (pure).

Invariant: ``unpack`` returns only what ``pack`` produced for the same version, and raises
``ValueError`` for anything else (not base64, not JSON, not an object, another version).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson


def pack(version: int, fields: dict[str, Any]) -> str:
    """``fields`` (JSON-ready) with a version, as compact unpadded urlsafe base64."""
    return base64.urlsafe_b64encode(orjson.dumps({"v": version, **fields})).decode().rstrip("=")


def unpack(text: str, version: int) -> dict[str, Any]:
    """The fields ``pack`` encoded under ``version``; ValueError for anything else."""
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("cursor is not valid base64 JSON") from None
    if not isinstance(payload, dict) or payload.get("v") != version:
        raise ValueError("cursor has an unknown version")
    return payload


def required_str(fields: dict[str, Any], key: str) -> str:
    """A non-empty string field; ValueError otherwise."""
    value = fields.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"cursor field {key!r} is not a non-empty string")
    return value
