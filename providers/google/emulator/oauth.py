"""Google's OAuth 2.0 token endpoint, refresh grant only (``POST /token``).

Invariants: success never returns a new refresh_token; a revoked or unknown refresh token is
400 ``invalid_grant``; an unknown client or wrong secret is 401 ``invalid_client``.
"""

from __future__ import annotations

from aiohttp import web

from .backend import BACKEND
from .store import OAuthError


async def token(request: web.Request) -> web.Response:
    """The refresh-token grant, form-encoded as google-auth sends it."""
    store = request.app[BACKEND].store
    form = await request.post()
    fields = {name: str(form.get(name, "")) for name in form}
    grant_type = fields.get("grant_type", "")
    if grant_type != "refresh_token":
        return _error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
    missing = [n for n in ("client_id", "refresh_token") if not fields.get(n)]
    if missing:
        return _error(400, "invalid_request", f"Missing required parameter: {missing[0]}")
    try:
        grant = store.exchange(
            fields["client_id"],
            fields.get("client_secret", ""),
            fields["refresh_token"],
            fields.get("scope") or None,
        )
    except OAuthError as exc:
        return _error(exc.status, exc.error, exc.description)
    expires_in = int((grant.expires_at - store.clock.now()).total_seconds())
    return web.json_response(
        {
            "access_token": grant.token,
            "expires_in": expires_in,
            "scope": grant.scope,
            "token_type": "Bearer",
        },
        headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"},
    )


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)
