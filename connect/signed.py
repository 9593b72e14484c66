"""Signed values of the connect flow (pure): urlsafe-base64 JSON, a dot, its HMAC-SHA256.

One format serves the flow cookie (``connect.cookie``), the host's start tokens and our results
(``connect.start_token``). Invariants: ``unseal`` returns the JSON object only of a value this
key signed (compared in constant time); anything else is ``Unsealed`` with a reason safe to
show: ``missing``, ``malformed`` (no dot, not ASCII, over ``max_chars``, not a JSON object) or
``signature``. Signed, not encrypted: nothing sealed here may be secret from its bearer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any, Literal

Reason = Literal["missing", "malformed", "signature"]


class Unsealed(Exception):
    """The value is not one this key signed; ``reason`` is safe to show."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def seal(key: bytes, claims: dict[str, Any]) -> str:
    """``claims`` as a signed value."""
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload)}"


def unseal(key: bytes, value: str | None, *, max_chars: int = 8192) -> dict[str, Any]:
    """The claims of a value ``key`` signed; ``Unsealed`` otherwise."""
    if not value:
        raise Unsealed("missing")
    payload, dot, mac = value.partition(".")
    if not dot or not payload.isascii() or len(value) > max_chars:
        raise Unsealed("malformed")
    if not hmac.compare_digest(_mac(key, payload), mac):
        raise Unsealed("signature")
    try:
        claims = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise Unsealed("malformed") from None
    if not isinstance(claims, dict):
        raise Unsealed("malformed")
    return claims
