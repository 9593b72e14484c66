"""Random values of one flow (pure): the PKCE verifier and its S256 challenge (RFC 7636), the
``state`` and the OpenID ``nonce``.

Invariant: every value comes from ``secrets`` with at least 256 bits of entropy; a verifier is
43-128 characters of the unreserved set, as RFC 7636 4.1 requires.
"""

from __future__ import annotations

import base64
import hashlib
import secrets


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_verifier() -> str:
    """A fresh code_verifier: 43 characters of urlsafe base64 (32 random bytes)."""
    return _b64url(secrets.token_bytes(32))


def s256_challenge(verifier: str) -> str:
    """The code_challenge for ``verifier`` under method S256."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_state() -> str:
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    return secrets.token_urlsafe(32)
