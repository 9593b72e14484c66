"""Opaque state tokens (HMAC-signed compact JSON) and RS256 JWTs for tokens and id_tokens (pure).

Invariants: a state token decodes only under the key that signed it; JWTs are signed with the
emulator's RSA key whose public half the JWKS endpoint publishes, so a client may verify them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_MAC_BYTES = 12


class TokenError(ValueError):
    """The token is malformed or was not signed by this emulator."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_state(payload: dict[str, Any], key: bytes) -> str:
    """Sign and encode ``payload`` into an opaque URL-safe string."""
    data = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(key, data, hashlib.sha256).digest()[:_MAC_BYTES]
    return b64url(mac + data)


def decode_state(token: str, key: bytes) -> dict[str, Any]:
    """Verify and decode :func:`encode_state` output; TokenError otherwise."""
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


class JwtSigner:
    """RS256 signer with a fixed key id; ``jwks()`` is what the keys endpoint serves."""

    def __init__(self, key: rsa.RSAPrivateKey, kid: str) -> None:
        self._key, self.kid = key, kid

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        head = b64url(json.dumps(header, separators=(",", ":")).encode())
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{head}.{body}".encode()
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{b64url(signature)}"

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "alg": "RS256",
                    "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": b64url(numbers.e.to_bytes(3, "big")),
                }
            ]
        }


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT without verifying it (for diagnostics only)."""
    try:
        payload = json.loads(b64url_decode(token.split(".")[1]))
    except (IndexError, ValueError) as exc:
        raise TokenError("not a JWT") from exc
    if not isinstance(payload, dict):
        raise TokenError("not an object")
    return payload
