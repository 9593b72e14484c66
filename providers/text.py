"""Provider JSON as text Postgres can store (pure).

Postgres refuses U+0000 in ``text`` and ``jsonb``, and a lone UTF-16 surrogate cannot be encoded
as UTF-8 at all: one such character in one event's title used to fail every commit of its page.
Google and Graph bodies are JSON, where both can arrive escaped (``\\u0000``, ``\\ud800``).

Invariants:
- ``parse_provider_json`` accepts what ``orjson`` accepts and, beyond it, lone surrogates,
  invalid UTF-8 (replaced) and raw control characters in strings; anything else is not JSON
  (ValueError);
- what it returns holds no U+0000 (dropped) and no lone surrogate (U+FFFD) in any string, keys
  included; a body that needs no cleaning is returned as parsed, without a walk.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# How U+0000 can appear in a body orjson parses (escaped, or raw inside a string it tolerates).
_NUL_ESCAPES = (b"\\u0000", b"\x00")


def _replacement(match: re.Match[str]) -> str:
    return "" if match.group() == "\x00" else "\ufffd"


def clean_text(value: str) -> str:
    """``value`` without U+0000 and with every lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(_replacement, value) if _UNSTORABLE.search(value) else value


def clean_json(value: Any) -> Any:
    """``value`` (parsed JSON) with every string, keys included, cleaned by ``clean_text``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def parse_provider_json(body: bytes) -> Any:
    """``body`` parsed, its strings storable; ValueError if it is not JSON."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates and raw control characters; the standard library reads
        # both (strict=False), and invalid UTF-8 becomes U+FFFD before it does.
        return clean_json(json.loads(body.decode("utf-8", "replace"), strict=False))
    # orjson refuses lone surrogates, so what it parsed can only hold U+0000.
    if any(marker in body for marker in _NUL_ESCAPES):
        return clean_json(parsed)
    return parsed
