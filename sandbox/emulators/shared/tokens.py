"""Opaque emulator state (sync, page, delta tokens): urlsafe base64 of compact JSON plus an HMAC.

Invariant: a token decodes only under the key that signed it, so a client cannot forge or edit
one; its content is never part of the protocol, only its opacity is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

_MAC_BYTES = 12


class TokenError(ValueError):
    """The token is malformed or was not signed by this emulator."""


def b64url(data: bytes) -> str:
    """Unpadded urlsafe base64."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded urlsafe base64 (ValueError if it is not)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(payload: dict[str, Any], key: bytes) -> str:
    """Sign and encode ``payload`` (JSON-serialisable) into an opaque string."""
    data = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(key, data, hashlib.sha256).digest()[:_MAC_BYTES]
    return b64url(mac + data)


def decode_token(token: str, key: bytes) -> dict[str, Any]:
    """Verify and decode a token made by :func:`encode_token`; raise TokenError otherwise."""
    try:
        raw = b64url_decode(token)
    except (ValueError, TypeError) as exc:
        raise TokenError("not base64") from exc
    mac, data = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, data, hashlib.sha256).digest()[:_MAC_BYTES]):
        raise TokenError("bad signature")
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise TokenError("not JSON") from exc
    if not isinstance(payload, dict):
        raise TokenError("not an object")
    return payload
