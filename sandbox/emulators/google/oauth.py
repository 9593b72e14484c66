"""Google's OAuth 2.0 endpoints for web-server apps: the authorization endpoint
(``GET /o/oauth2/v2/auth``, a sign-in without UI), the token endpoint (``POST /token``) with
the refresh_token and authorization_code grants, and ``GET /tokeninfo?access_token=``.

Invariants: a refresh never returns a new refresh_token; a code grant returns one only for
``access_type=offline``; both return an id_token (with ``email`` under the ``email`` scope)
only for ``openid``, a refresh's without ``nonce``; tokeninfo names the user (``sub``) only
for a token with ``openid``, ``email`` or ``profile`` and answers 400 ``invalid_token`` for
an unknown or expired one; a revoked or unknown refresh token, and a reused, expired, foreign
or unverified code, are 400 ``invalid_grant``; an unknown client or wrong secret is 401
``invalid_client``; the authorization endpoint redirects only to a well-formed
``redirect_uri`` of a known client, with ``state`` unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from typing import Any

from aiohttp import web

# One RS256 implementation for both emulators' id_tokens (it is provider-neutral).
from sandbox.emulators.microsoft.certs import signing_key
from sandbox.emulators.microsoft.tokens import JwtSigner
from sandbox.emulators.shared.authorization import (
    Approval,
    CodeRefused,
    RequestError,
    parse_request,
    redirect_url,
    request_problem,
)

from .backend import BACKEND, Backend
from .store import AccessGrant, OAuthError

AUTHORIZE_PATH = "/o/oauth2/v2/auth"
ISSUER = "https://accounts.google.com"
_NO_CACHE = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"}
# Google's own wording for refused codes (the description is not part of the contract).
_CODE_REFUSALS = {
    "no_verifier": "Missing code verifier.",
    "verifier": "Invalid code verifier.",
}


async def authorize(request: web.Request) -> web.Response:
    """Sign in the queued (or hinted, or sole) user and redirect back with a code."""
    backend = request.app[BACKEND]
    try:
        auth = parse_request(request.query)
    except RequestError as exc:
        return web.Response(status=400, text=f"Error 400: invalid_request\n{exc}")
    if auth.client_id not in backend.store.clients:
        return web.Response(
            status=401, text="Error 401: invalid_client\nThe OAuth client was not found."
        )
    problem = request_problem(auth)
    sign_in = backend.authorizations.next_sign_in()
    if problem is None and sign_in is not None and sign_in.deny:
        problem = ("access_denied", "")
    if problem is not None:
        raise web.HTTPFound(
            redirect_url(auth.redirect_uri, {"error": problem[0], "state": auth.state})
        )
    user = _signed_in_user(backend, sign_in.user if sign_in else None, auth.login_hint)
    if user is None:
        return web.Response(
            status=400, text="Error 400: no user to sign in (queue one or pass login_hint)"
        )
    approval = Approval(
        user=user,
        client_id=auth.client_id,
        redirect_uri=auth.redirect_uri,
        scopes=auth.scopes,
        code_challenge=auth.code_challenge,
        code_challenge_method=auth.code_challenge_method,
        nonce=auth.nonce,
        offline=auth.access_type == "offline",
    )
    code = backend.authorizations.issue(approval, backend.store.clock.now())
    params = {"state": auth.state, "code": code, "scope": " ".join(auth.scopes)}
    raise web.HTTPFound(redirect_url(auth.redirect_uri, params))


def _signed_in_user(backend: Backend, queued: str | None, hint: str | None) -> str | None:
    users = backend.store.user_calendars
    wanted = queued or hint
    if wanted is not None:
        return wanted if wanted in users else None
    return next(iter(users)) if len(users) == 1 else None


async def token(request: web.Request) -> web.Response:
    """The token endpoint, form-encoded as google-auth and web-server apps send it."""
    form = await request.post()
    fields = {name: str(form.get(name, "")) for name in form}
    grant_type = fields.get("grant_type", "")
    try:
        if grant_type == "refresh_token":
            return _refresh(request.app[BACKEND], fields)
        if grant_type == "authorization_code":
            return _redeem(request.app[BACKEND], fields)
    except OAuthError as exc:
        return _error(exc.status, exc.error, exc.description)
    return _error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")


def _refresh(backend: Backend, fields: dict[str, str]) -> web.Response:
    _require(fields, "client_id", "refresh_token")
    store = backend.store
    grant = store.exchange(
        fields["client_id"],
        fields.get("client_secret", ""),
        fields["refresh_token"],
        fields.get("scope") or None,
    )
    body = _access_body(backend, grant)
    scopes = tuple(grant.scope.split())
    if "openid" in scopes:
        now = int(store.clock.now().timestamp())
        body["id_token"] = _id_token(
            grant.email, grant.client_id, scopes, nonce=None, now=now, lifetime=3600
        )
    return web.json_response(body, headers=_NO_CACHE)


async def tokeninfo(request: web.Request) -> web.Response:
    """What Google knows of an access token: its client, scopes, expiry and, for identity
    scopes, its user."""
    store = request.app[BACKEND].store
    grant = store.access_grants.get(request.query.get("access_token", ""))
    now = store.clock.now()
    if grant is None or grant.expires_at <= now:
        return _error(400, "invalid_token", "Invalid Value")
    scopes = grant.scope.split()
    expires_in = int((grant.expires_at - now).total_seconds())
    info: dict[str, Any] = {
        "azp": grant.client_id,
        "aud": grant.client_id,
        "scope": grant.scope,
        "exp": str(int(grant.expires_at.timestamp())),
        "expires_in": str(expires_in),
        "access_type": "offline",
    }
    if {"openid", "email", "profile"} & set(scopes) or any(
        s.endswith(("/userinfo.email", "/userinfo.profile")) for s in scopes
    ):
        info["sub"] = _subject(grant.email)
    if "email" in scopes or any(s.endswith("/userinfo.email") for s in scopes):
        info.update(email=grant.email, email_verified="true")
    return web.json_response(info, headers=_NO_CACHE)


def _redeem(backend: Backend, fields: dict[str, str]) -> web.Response:
    _require(fields, "client_id", "code", "redirect_uri")
    store = backend.store
    client = store.clients.get(fields["client_id"])
    if client is None:
        raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
    if not secrets.compare_digest(client.client_secret, fields.get("client_secret", "")):
        raise OAuthError(401, "invalid_client", "Unauthorized")
    now = store.clock.now()
    try:
        approval = backend.authorizations.redeem(
            fields["code"],
            client_id=client.client_id,
            redirect_uri=fields["redirect_uri"],
            verifier=fields.get("code_verifier") or None,
            now=now,
        )
    except CodeRefused as exc:
        if exc.reason == "redirect_uri":
            raise OAuthError(400, "redirect_uri_mismatch", "Bad Request") from None
        raise OAuthError(
            400, "invalid_grant", _CODE_REFUSALS.get(exc.reason, "Bad Request")
        ) from None
    access = AccessGrant(
        "ya29." + secrets.token_urlsafe(64),
        approval.user,
        client.client_id,
        " ".join(approval.scopes),
        now + store.token_lifetime,
    )
    store.access_grants[access.token] = access
    body = _access_body(backend, access)
    if approval.offline:
        body["refresh_token"] = store.grant_refresh_token(
            approval.user, client.client_id, approval.scopes
        )
    if "openid" in approval.scopes:
        body["id_token"] = _id_token(
            approval.user,
            approval.client_id,
            approval.scopes,
            nonce=approval.nonce,
            now=int(now.timestamp()),
            lifetime=body["expires_in"],
        )
    return web.json_response(body, headers=_NO_CACHE)


def _access_body(backend: Backend, grant: AccessGrant) -> dict[str, Any]:
    expires_in = int((grant.expires_at - backend.store.clock.now()).total_seconds())
    return {
        "access_token": grant.token,
        "expires_in": expires_in,
        "scope": grant.scope,
        "token_type": "Bearer",
    }


def _subject(email: str) -> str:
    # A stable per-user number, as Google's "sub" is.
    return str(int.from_bytes(hashlib.sha256(email.encode()).digest()[:8], "big"))


def _id_token(
    user: str,
    client_id: str,
    scopes: tuple[str, ...],
    *,
    nonce: str | None,
    now: int,
    lifetime: int,
) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "azp": client_id,
        "aud": client_id,
        "sub": _subject(user),
        "iat": now,
        "exp": now + lifetime,
    }
    if "email" in scopes:
        claims.update(email=user, email_verified=True)
    if nonce is not None:
        claims["nonce"] = nonce
    return _signer().sign(claims)


@functools.cache
def _signer() -> JwtSigner:
    # One key per process, made on first use: RSA generation is slow and only id_tokens need it.
    return JwtSigner(signing_key(), "google-emulator-key-1")


def _require(fields: dict[str, str], *names: str) -> None:
    missing = [n for n in names if not fields.get(n)]
    if missing:
        raise OAuthError(400, "invalid_request", f"Missing required parameter: {missing[0]}")


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)
