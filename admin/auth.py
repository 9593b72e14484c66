"""Bearer-token authentication: tokens are configured as SHA-256 hashes, never in clear.

Invariants:
- a request passes only if ``Authorization: Bearer <token>`` hashes to a configured hash; every
  hash is compared with ``hmac.compare_digest`` (all of them, so timing tells nothing);
- a missing or wrong token is a 401 with ``WWW-Authenticate: Bearer`` and the JSON error body,
  before any routing: unknown paths are refused the same way;
- only the paths in ``public`` (the OpenAPI document) and those under ``open_prefixes`` (the
  process's health endpoints and the OAuth flow's browser endpoints) are served without a token;
- the presented token is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from admin.errors import error_response

CHALLENGE = 'Bearer realm="integration-worker"'


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as configured in ``IW_API_TOKEN_HASHES``."""
    return hashlib.sha256(token.encode()).hexdigest()


def presented_hash(header: str | None) -> str | None:
    """The hash of the bearer token an ``Authorization`` header carries, or None (no header,
    another scheme, an empty token, raw bytes that are not UTF-8)."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return hash_token(token.strip())
    except UnicodeEncodeError:  # raw bytes that are not UTF-8 (decoded as surrogates)
        return None


def token_accepted(header: str | None, hashes: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header carries a token whose hash is one of ``hashes``."""
    digest = presented_hash(header)
    if digest is None:
        return False
    presented = digest.encode()
    accepted = False
    for expected in hashes:
        accepted |= hmac.compare_digest(presented, expected.lower().encode())
    return accepted


def bearer_middleware(
    hashes: Sequence[str], public: Collection[str], open_prefixes: Sequence[str] = ()
) -> Middleware:
    """The middleware refusing requests without an accepted token (except ``public`` paths and
    paths under ``open_prefixes``)."""
    frozen = tuple(hashes)
    prefixes = tuple(open_prefixes)
    if not frozen:
        raise ValueError("at least one token hash is required")

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if (
            path in public
            or path.startswith(prefixes)
            or token_accepted(request.headers.get("Authorization"), frozen)
        ):
            return await handler(request)
        return error_response(
            401,
            "unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": CHALLENGE},
        )

    return authenticate
