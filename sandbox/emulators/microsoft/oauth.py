"""Identity-platform routes: OpenID discovery (authority and oidc_authority forms), JWKS, the
v2.0 authorization endpoint (a sign-in without UI) and the v2.0 token endpoint's refresh_token
and authorization_code grants.

Invariants: discovery always names ``authorization_endpoint`` and ``token_endpoint`` under the
requested tenant segment, with an ``issuer`` on the same scheme and host; token errors leave in
the Entra shape with no-store caching headers; ``client_secret`` is read from the form body or
HTTP Basic; the authorization endpoint redirects only to a well-formed ``redirect_uri`` of a
known app, with ``state`` unchanged (``response_mode=query``).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from sandbox.emulators.shared.authorization import (
    Approval,
    RequestError,
    parse_request,
    redirect_url,
    request_problem,
)

from .backend import BACKEND, Backend
from .errors import OAuthError
from .identity import User

_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
_GENERIC_TENANTS = frozenset({"common", "organizations", "consumers"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", discovery)
    app.router.add_get("/{tenant}/.well-known/openid-configuration", discovery)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", keys)
    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", authorize)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)


def oauth_response(exc: OAuthError, request: web.Request) -> web.Response:
    body = exc.body(request.headers.get("client-request-id"), request.app[BACKEND].clock.now())
    return web.json_response(body, status=exc.status, headers={**_NO_STORE, **exc.headers})


def _tenant(backend: Backend, request: web.Request) -> str:
    tenant = request.match_info["tenant"]
    known = {u.tenant_id for u in backend.directory.users.values()} | {backend.tenant_id}
    if tenant not in known and tenant.lower() not in _GENERIC_TENANTS:
        raise OAuthError(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.",
        )
    return tenant


async def discovery(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    tenant = _tenant(backend, request)
    base = f"{backend.origin}/{tenant}"
    issuer_tenant = "{tenantid}" if tenant.lower() in _GENERIC_TENANTS else tenant
    body: dict[str, Any] = {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{backend.origin}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{backend.origin}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }
    return web.json_response(body)


async def keys(request: web.Request) -> web.Response:
    return web.json_response(request.app[BACKEND].directory.signer.jwks())


async def token(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    tenant = _tenant(backend, request)
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    client_id, secret = fields.get("client_id"), fields.get("client_secret")
    basic = _basic(request.headers.get("Authorization", ""))
    if basic is not None:
        client_id, secret = client_id or basic[0], secret or basic[1]
    grant_type = fields.get("grant_type")
    if not client_id:
        raise OAuthError(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    if grant_type == "refresh_token":
        issued = backend.directory.refresh(
            tenant,
            client_id,
            secret,
            _required(fields, "refresh_token"),
            fields.get("scope", ""),
            client_info=fields.get("client_info") == "1",
        )
    elif grant_type == "authorization_code":
        issued = backend.directory.redeem(
            tenant,
            client_id,
            secret,
            _required(fields, "code"),
            redirect_uri=_required(fields, "redirect_uri"),
            verifier=fields.get("code_verifier") or None,
            scope=fields.get("scope", ""),
            client_info=fields.get("client_info") == "1",
        )
    else:
        raise OAuthError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )
    lifetime = int((issued.access.expires_at - backend.clock.now()).total_seconds())
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": issued.scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": issued.access.token,
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    if issued.id_token is not None:
        body["id_token"] = issued.id_token
    if issued.client_info:
        body["client_info"] = issued.client_info
    return web.json_response(body, headers=_NO_STORE)


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise OAuthError(
            400,
            "invalid_request",
            900144,
            f"The request body must contain the following parameter: '{name}'.",
        )
    return value


async def authorize(request: web.Request) -> web.Response:
    """Sign in the queued (or hinted, or sole) user and redirect back with a code."""
    backend = request.app[BACKEND]
    tenant = _tenant(backend, request)
    try:
        auth = parse_request(request.query)
    except RequestError as exc:
        return web.Response(status=400, text=f"AADSTS900144: {exc}")
    if auth.client_id not in backend.directory.apps:
        return web.Response(
            status=400,
            text=f"AADSTS700016: Application with identifier '{auth.client_id}' was not found "
            "in the directory.",
        )
    problem = request_problem(auth)
    sign_in = backend.directory.authorizations.next_sign_in()
    if problem is None and sign_in is not None and sign_in.deny:
        problem = ("access_denied", "AADSTS65004: User declined to consent to access the app.")
    if problem is not None:
        error, description = problem
        params = {"error": error, "error_description": description, "state": auth.state}
        raise web.HTTPFound(redirect_url(auth.redirect_uri, params))
    user = _signed_in_user(backend, tenant, sign_in.user if sign_in else None, auth.login_hint)
    if user is None:
        return web.Response(status=400, text="no user to sign in (queue one or pass login_hint)")
    approval = Approval(
        user=user.id,
        client_id=auth.client_id,
        redirect_uri=auth.redirect_uri,
        scopes=auth.scopes,
        code_challenge=auth.code_challenge,
        code_challenge_method=auth.code_challenge_method,
        nonce=auth.nonce,
        offline="offline_access" in auth.scopes,
    )
    code = backend.directory.authorize(approval)
    raise web.HTTPFound(redirect_url(auth.redirect_uri, {"code": code, "state": auth.state}))


def _signed_in_user(
    backend: Backend, tenant: str, queued: str | None, hint: str | None
) -> User | None:
    directory = backend.directory
    wanted = queued or hint
    if wanted is not None:
        user = directory.user_by_upn(wanted)
    else:
        users = list(directory.users.values())
        user = users[0] if len(users) == 1 else None
    if user is None or tenant not in (*_GENERIC_TENANTS, user.tenant_id):
        return None
    return user


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return unquote(user), unquote(password)
