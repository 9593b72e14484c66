"""RS256 JWTs for access and id tokens (pure); opaque state tokens are shared with the other
emulators (``sandbox.emulators.shared.tokens``).

Invariant: JWTs are signed with the emulator's RSA key whose public half the JWKS endpoint
publishes, so a client may verify them.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.emulators.shared.tokens import TokenError, b64url, b64url_decode


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
