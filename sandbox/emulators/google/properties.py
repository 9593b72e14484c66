"""Event extended properties as Google stores them (pure, no aiohttp).

Invariants: a stored ``extendedProperties`` holds only non-empty ``private`` and ``shared`` maps
of string values; a key longer than 44 characters is dropped and a value longer than 1024
characters truncated, silently, as the extended-properties guide documents ("Limits"); a null
value (left by a patch's merge or sent on insert) means "no such property".
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

MAX_KEY_LENGTH = 44
MAX_VALUE_LENGTH = 1024
SCOPES = ("private", "shared")


def normalise(body: dict[str, Any]) -> None:
    """Apply the documented limits to ``body["extendedProperties"]`` in place; 400 if the
    value is not the documented shape (objects of string values)."""
    properties = body.pop("extendedProperties", None)
    if properties is None:
        return
    if not isinstance(properties, dict) or not set(properties) <= set(SCOPES):
        raise _invalid()
    kept: dict[str, dict[str, str]] = {}
    for scope in SCOPES:
        values = properties.get(scope)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise _invalid()
        if not all(value is None or isinstance(value, str) for value in values.values()):
            raise _invalid()
        scoped = {
            key: value[:MAX_VALUE_LENGTH]
            for key, value in values.items()
            if value is not None and len(key) <= MAX_KEY_LENGTH
        }
        if scoped:
            kept[scope] = scoped
    if kept:
        body["extendedProperties"] = kept


def _invalid() -> ApiError:
    return ApiError(400, "invalid", "Invalid value for: extendedProperties")
