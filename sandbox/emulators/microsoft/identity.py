"""Entra ID state: tenants, app registrations, users, authorization codes, refresh-token
families and access tokens (pure, no aiohttp).

Invariants: every refresh returns a NEW refresh token in the same family; the presented one stays
valid until its own expiry (as Entra keeps old refresh tokens), unless ``rotate_invalidates`` is
set; revoking any token of a family revokes the whole family and its access tokens (as
revokeSignInSessions does); access tokens are RS256 JWTs that are also recorded here, so expiry
and revocation apply before their ``exp``; a redeemed code starts a new family, with a refresh
token only under ``offline_access`` and an id_token (carrying the request's nonce) only under
``openid``; a code is single-use (``sandbox.emulators.shared.authorization``).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sandbox.emulators.shared.authorization import Approval, Authorizations, CodeRefused
from sandbox.emulators.shared.clock import Clock
from sandbox.emulators.shared.tokens import b64url

from .errors import OAuthError
from .tokens import JwtSigner

GRAPH_RESOURCE = "https://graph.microsoft.com"
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
# A fixed tenant so authorities are stable across runs.
DEFAULT_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
BLOCKS = frozenset({"mfa", "interaction_required", "consent_required"})


@dataclass
class App:
    client_id: str
    client_secret: str


@dataclass
class User:
    id: str
    upn: str
    tenant_id: str
    display_name: str
    block: str | None = None


@dataclass
class RefreshToken:
    token: str
    family: str
    user_id: str
    client_id: str
    expires_at: datetime
    valid: bool = True


@dataclass
class AccessToken:
    token: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: datetime


@dataclass
class Issued:
    """What a successful refresh hands back to the token endpoint."""

    access: AccessToken
    refresh_token: str | None
    scope: str
    id_token: str | None
    client_info: str


@dataclass
class Directory:
    clock: Clock
    signer: JwtSigner
    access_lifetime: timedelta = timedelta(hours=1)
    refresh_lifetime: timedelta = timedelta(days=90)
    rotate_invalidates: bool = False
    issuer_base: str = ""
    apps: dict[str, App] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    authorizations: Authorizations = field(default_factory=Authorizations)

    def add_app(self, client_id: str, client_secret: str) -> App:
        app = App(client_id, client_secret)
        self.apps[client_id] = app
        return app

    def add_user(
        self, upn: str, tenant_id: str = DEFAULT_TENANT, display_name: str | None = None
    ) -> User:
        if self.user_by_upn(upn) is not None:
            raise ValueError(f"user {upn!r} exists")
        user = User(
            str(uuid.uuid4()), upn, tenant_id, display_name or upn.split("@", maxsplit=1)[0]
        )
        self.users[user.id] = user
        return user

    def user_by_upn(self, upn: str) -> User | None:
        return next((u for u in self.users.values() if u.upn.lower() == upn.lower()), None)

    def grant(self, user_id: str, client_id: str, token: str | None = None) -> str:
        """A refresh token for ``user_id`` and the app (a new family)."""
        if client_id not in self.apps:
            raise KeyError(f"unknown client {client_id!r}")
        return self._mint_refresh(user_id, client_id, str(uuid.uuid4()), token)

    def refresh(
        self,
        tenant: str,
        client_id: str,
        client_secret: str | None,
        refresh_token: str,
        scope: str,
        *,
        client_info: bool,
    ) -> Issued:
        """The refresh_token grant, or OAuthError exactly as the v2.0 token endpoint answers."""
        self._authenticate_client(client_id, client_secret)
        if not scope.strip():
            raise OAuthError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        record = self.refresh_tokens.get(refresh_token)
        if record is None or record.client_id != client_id:
            raise OAuthError(
                400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if not record.valid:
            raise OAuthError(
                400,
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password.",
            )
        now = self.clock.now()
        if record.expires_at <= now:
            raise OAuthError(
                400,
                "invalid_grant",
                700082,
                "The refresh token has expired due to inactivity.",
            )
        user = self.users[record.user_id]
        if tenant not in ("common", "organizations", user.tenant_id):
            raise OAuthError(
                400,
                "invalid_grant",
                50020,
                f"User account '{user.upn}' does not exist in tenant '{tenant}'.",
            )
        if user.block is not None:
            raise _blocked(user.block)
        if self.rotate_invalidates:
            record.valid = False
        return self._issue(
            user, client_id, tuple(scope.split()), record.family, None, client_info=client_info
        )

    def authorize(self, approval: Approval) -> str:
        """A code for what ``approval.user`` (a user id) approved at the authorize endpoint."""
        return self.authorizations.issue(approval, self.clock.now())

    def redeem(
        self,
        tenant: str,
        client_id: str,
        client_secret: str | None,
        code: str,
        *,
        redirect_uri: str,
        verifier: str | None,
        scope: str,
        client_info: bool,
    ) -> Issued:
        """The authorization_code grant, or OAuthError as the v2.0 token endpoint answers."""
        self._authenticate_client(client_id, client_secret)
        try:
            approval = self.authorizations.redeem(
                code,
                client_id=client_id,
                redirect_uri=redirect_uri,
                verifier=verifier,
                now=self.clock.now(),
            )
        except CodeRefused as exc:
            raise _refused_code(exc) from None
        user = self.users[approval.user]
        if tenant not in ("common", "organizations", user.tenant_id):
            raise OAuthError(
                400,
                "invalid_grant",
                50020,
                f"User account '{user.upn}' does not exist in tenant '{tenant}'.",
            )
        # The scope parameter of a redemption is optional (a Microsoft extension).
        scopes = tuple(scope.split()) or approval.scopes
        rt_family = str(uuid.uuid4()) if "offline_access" in approval.scopes else None
        return self._issue(
            user, client_id, scopes, rt_family, approval.nonce, client_info=client_info
        )

    def _authenticate_client(self, client_id: str, client_secret: str | None) -> None:
        app = self.apps.get(client_id)
        if app is None:
            raise OAuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        if client_secret is None:
            raise OAuthError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        if not secrets.compare_digest(app.client_secret, client_secret):
            raise OAuthError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID.",
            )

    def _issue(
        self,
        user: User,
        client_id: str,
        scopes: tuple[str, ...],
        rt_family: str | None,
        nonce: str | None,
        *,
        client_info: bool,
    ) -> Issued:
        """An access token, a refresh token in ``rt_family`` (if any) and the optional parts."""
        now = self.clock.now()
        resource_scopes = tuple(s for s in scopes if s not in RESERVED_SCOPES)
        access = AccessToken(
            self.signer.sign(self._at_claims(user, client_id, resource_scopes, now)),
            user.id,
            client_id,
            resource_scopes,
            now + self.access_lifetime,
        )
        self.access_tokens[access.token] = access
        new_rt = None
        if rt_family is not None:
            new_rt = self._mint_refresh(user.id, client_id, rt_family, None)
        id_token = None
        if "openid" in scopes:
            id_token = self._id_token(user, client_id, now, nonce, email="email" in scopes)
        info = b64url(json.dumps({"uid": user.id, "utid": user.tenant_id}).encode())
        return Issued(access, new_rt, " ".join(scopes), id_token, info if client_info else "")

    def authenticate(self, token: str) -> AccessToken | str:
        """The access token record, or why it is not acceptable (the 401 message)."""
        record = self.access_tokens.get(token)
        if record is None:
            if token.count(".") == 2:
                return "Access token validation failure. Invalid audience."
            return "IDX14100: JWT is not well formed, there are no dots (.)."
        if record.expires_at <= self.clock.now():
            return "Lifetime validation failed, the token is expired."
        return record

    def revoke(self, refresh_token: str) -> None:
        """Revoke the whole family of ``refresh_token`` and the user's tokens for that app."""
        family = self.refresh_tokens[refresh_token]
        for rt in self.refresh_tokens.values():
            if rt.family == family.family:
                rt.valid = False
        self._drop_access(family.user_id, family.client_id)

    def revoke_user(self, user_id: str) -> None:
        """revokeSignInSessions: every refresh and access token of the user dies."""
        for rt in self.refresh_tokens.values():
            if rt.user_id == user_id:
                rt.valid = False
        self._drop_access(user_id, None)

    def expire_access_tokens(self, user_id: str | None = None) -> int:
        now = self.clock.now()
        count = 0
        for record in self.access_tokens.values():
            if user_id in (None, record.user_id) and record.expires_at > now:
                record.expires_at = now
                count += 1
        return count

    def set_block(self, user_id: str, block: str | None) -> None:
        if block is not None and block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; known: {sorted(BLOCKS)}")
        self.users[user_id].block = block

    def _drop_access(self, user_id: str, client_id: str | None) -> None:
        for token, record in list(self.access_tokens.items()):
            if record.user_id == user_id and client_id in (None, record.client_id):
                del self.access_tokens[token]

    def _mint_refresh(self, user_id: str, client_id: str, family: str, token: str | None) -> str:
        token = token or "1.AQ" + secrets.token_urlsafe(96)
        self.refresh_tokens[token] = RefreshToken(
            token, family, user_id, client_id, self.clock.now() + self.refresh_lifetime
        )
        return token

    def _at_claims(
        self, user: User, client_id: str, scopes: tuple[str, ...], now: datetime
    ) -> dict[str, Any]:
        short = [s.removeprefix(GRAPH_RESOURCE + "/") for s in scopes]
        return {
            "aud": "00000003-0000-0000-c000-000000000000",
            "iss": f"https://sts.windows.net/{user.tenant_id}/",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + self.access_lifetime).timestamp()),
            "appid": client_id,
            "oid": user.id,
            "tid": user.tenant_id,
            "upn": user.upn,
            "scp": " ".join(short),
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }

    def _id_token(
        self, user: User, client_id: str, now: datetime, nonce: str | None, *, email: bool
    ) -> str:
        claims: dict[str, Any] = {
            "aud": client_id,
            "iss": f"{self.issuer_base}{user.tenant_id}/v2.0",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + self.access_lifetime).timestamp()),
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.upn,
            "sub": b64url(f"{user.id}:{client_id}".encode())[:43],
            "tid": user.tenant_id,
            "ver": "2.0",
        }
        if email:
            claims["email"] = user.upn
        if nonce is not None:
            claims["nonce"] = nonce
        return self.signer.sign(claims)


def _refused_code(exc: CodeRefused) -> OAuthError:
    """Entra's answer to a code it will not redeem (all invalid_grant, per the auth-code doc)."""
    if exc.reason == "redeemed":
        return OAuthError(
            400,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
            "or use an existing refresh token.",
        )
    if exc.reason == "expired":
        return OAuthError(
            400,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. "
            "Send a new interactive authorization request for this user and resource.",
        )
    if exc.reason == "redirect_uri":
        return OAuthError(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'redirect_uri' is not valid. The value must exactly match "
            "the redirect URI used to obtain the authorization code.",
        )
    if exc.reason in ("verifier", "no_verifier"):
        return OAuthError(
            400,
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization "
            "request.",
        )
    return OAuthError(
        400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
    )


def _blocked(block: str) -> OAuthError:
    """The answer for a user whom conditional access (or consent) stops at refresh time."""
    if block == "mfa":
        return OAuthError(
            400,
            "invalid_grant",
            50076,
            "Due to a configuration change made by your administrator, or because you moved to "
            "a new location, you must use multi-factor authentication to access "
            "'00000003-0000-0000-c000-000000000000'.",
            extra={
                "suberror": "basic_action",
                "claims": '{"access_token":{"capolids":{"essential":true,"values":'
                '["00000000-0000-0000-0000-000000000001"]}}}',
            },
        )
    if block == "consent_required":
        return OAuthError(
            400,
            "invalid_grant",
            65001,
            "The user or administrator has not consented to use the application.",
            extra={"suberror": "consent_required"},
        )
    return OAuthError(
        400,
        "interaction_required",
        50079,
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must enroll in multi-factor authentication.",
        extra={"suberror": "basic_action"},
    )
