"""Single-value extended properties on events (pure, no aiohttp): what a client may write, how a
PATCH merges them, and the two documented ways to read them, ``$expand`` and ``$filter``.

Invariants:
- a property id has one of the documented single-value formats (``{type} {guid} Name {name}``,
  ``{type} {guid} Id {id}``, ``{type} {proptag}``); ids compare with the type and GUID in any
  case and the Name exactly (Graph matches Name case-sensitively), values case-insensitively;
- a PATCH sets the properties it lists and leaves the others as they were;
- properties are never part of a rendered event unless ``$expand``ed by id, and the only forms
  understood are ``singleValueExtendedProperties($filter=id eq '<id>')`` for ``$expand`` and
  ``singleValueExtendedProperties/Any(ep: ep/id eq '<id>' and ep/value eq '<value>')`` for
  ``$filter``; anything else is 400 in the Graph envelope (the exact code Graph uses for an
  unsupported clause is undocumented).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import GraphError, bad_request

FIELD = "singleValueExtendedProperties"
_LITERAL = r"'((?:[^']|'')*)'"
_GUID = r"\{([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}"
_NAMED = re.compile(rf"^(\w+) {_GUID} (Name|Id) (\S.*)$", re.IGNORECASE)
_PROPTAG = re.compile(r"^(\w+) (0x[0-9A-Fa-f]{8})$")
_EXPAND = re.compile(
    rf"^\s*{FIELD}\(\s*\$filter\s*=\s*id\s+eq\s+{_LITERAL}\s*\)\s*$", re.IGNORECASE
)
_FILTER = re.compile(
    rf"^\s*{FIELD}/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+{_LITERAL}"
    rf"\s+and\s+\1/value\s+eq\s+{_LITERAL}\s*\)\s*$",
    re.IGNORECASE,
)


def canonical_id(property_id: str) -> str | None:
    """The comparable form of a single-value property id, or None if it has no valid format."""
    named = _NAMED.match(property_id)
    if named is not None:
        kind, guid, form, name = named.groups()
        if kind.lower().endswith("array"):
            return None
        if form.lower() == "id":
            name = name.lower()  # a numeric identifier: 0x8012 and 0X8012 are one id
        return f"{kind.lower()} {{{guid.lower()}}} {form.lower()} {name}"
    tagged = _PROPTAG.match(property_id)
    if tagged is not None and not tagged.group(1).lower().endswith("array"):
        return f"{tagged.group(1).lower()} {tagged.group(2).lower()}"
    return None


def validate(value: Any) -> list[dict[str, str]]:
    """A written ``singleValueExtendedProperties`` collection; 400 unless each entry is an
    object with a valid string ``id`` and a string ``value``."""
    if not isinstance(value, list):
        raise GraphError(400, "RequestBodyRead", f"The property '{FIELD}' must be a collection.")
    out: list[dict[str, str]] = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            raise GraphError(
                400, "RequestBodyRead", "Each extended property needs a string id and value."
            )
        property_id = entry.get("id")
        if not isinstance(property_id, str) or canonical_id(property_id) is None:
            raise bad_request("The extended property id is not valid.", "ErrorInvalidProperty")
        out.append({"id": property_id, "value": entry["value"]})
    return out


def merge(stored: list[dict[str, str]], written: list[dict[str, str]]) -> list[dict[str, str]]:
    """``stored`` with every property of ``written`` set (same id: the written value wins)."""
    merged = {canonical_id(p["id"]): p for p in stored}
    merged.update({canonical_id(p["id"]): p for p in written})
    return list(merged.values())


def parse_expand(text: str) -> str:
    """The canonical id an ``$expand`` asks for; 400 for any other form."""
    match = _EXPAND.match(text)
    wanted = None if match is None else canonical_id(_unquote(match.group(1)))
    if wanted is None:
        raise bad_request(f"Parsing OData Select and Expand failed: '{text}' is not supported.")
    return wanted


def parse_filter(text: str) -> tuple[str, str]:
    """The canonical id and value a ``$filter`` asks for; 400 for any other form."""
    match = _FILTER.match(text)
    wanted = None if match is None else canonical_id(_unquote(match.group(2)))
    if match is None or wanted is None:
        raise bad_request("Invalid filter clause")
    return wanted, _unquote(match.group(3))


def expanded(stored: list[dict[str, str]], wanted: str) -> list[dict[str, str]]:
    """The stored properties an ``$expand`` of ``wanted`` returns (as they were written)."""
    return [dict(p) for p in stored if canonical_id(p["id"]) == wanted]


def matches(stored: list[dict[str, str]], wanted: str, value: str) -> bool:
    """Whether a property with id ``wanted`` has ``value`` (compared case-insensitively)."""
    return any(
        canonical_id(p["id"]) == wanted and p["value"].casefold() == value.casefold()
        for p in stored
    )


def _unquote(literal: str) -> str:
    """An OData string literal's content (a doubled quote is one quote)."""
    return literal.replace("''", "'")


def with_expansion(
    resource: dict[str, Any], stored: list[dict[str, str]], wanted: str | None
) -> dict[str, Any]:
    """``resource`` plus the properties an ``$expand`` of ``wanted`` returns, if any match."""
    found = [] if wanted is None else expanded(stored, wanted)
    return {**resource, FIELD: found} if found else resource
