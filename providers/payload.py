"""Typed readers for provider JSON (pure): each returns the field or raises MalformedPayload.

Invariant: messages name the field (``what.key``), never its value, since values may be
personal data or tokens; a client turns MalformedPayload in a page's frame (its links, its
tokens) into ``Transient`` (the page is retried), and in one of its items into a ``SetAside``
(the page goes on without it): the replica never crashes on bad data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.models import SetAside


class MalformedPayload(ValueError):
    """A provider response did not have the documented shape (the message names the field)."""


def obj(value: object, what: str) -> Mapping[str, Any]:
    """``value`` as a JSON object; MalformedPayload naming ``what`` otherwise."""
    if not isinstance(value, Mapping):
        raise MalformedPayload(f"{what} is not a JSON object")
    return value


def opt_str(item: Mapping[str, Any], key: str, what: str) -> str | None:
    """An optional string field (absent or null is None)."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{what}.{key} is not a string")
    return value


def read_str(item: Mapping[str, Any], key: str, what: str) -> str:
    """A required non-empty string field."""
    value = opt_str(item, key, what)
    if not value:
        raise MalformedPayload(f"{what}.{key} is missing")
    return value


def opt_bool(item: Mapping[str, Any], key: str, what: str) -> bool:
    """An optional boolean field (absent or null is False)."""
    value = item.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MalformedPayload(f"{what}.{key} is not a boolean")
    return value


def set_aside(item: object, error: MalformedPayload) -> SetAside:
    """An item its page could not read, kept whole with the reason (the field it names)."""
    raw: Mapping[str, Any] = item if isinstance(item, Mapping) else {"item": item}
    item_id = raw.get("id")
    return SetAside(
        id=item_id if isinstance(item_id, str) and item_id else None, reason=str(error), raw=raw
    )
