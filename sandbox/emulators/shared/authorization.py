"""The authorization-code grant as both emulators serve it (pure, no aiohttp): the sign-in a test
queued, the authorization request's parameters, issued codes and their redemption.

Invariants: a code is redeemable once: the first redemption attempt consumes it whatever its
outcome (RFC 6749 4.1.2), so a guessed verifier cannot be retried; a code dies ``lifetime``
after issue; it is bound to the client, the exact ``redirect_uri`` and the PKCE challenge of
its request (RFC 7636: ``S256`` or ``plain``, which is assumed when no method is named).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .tokens import b64url

CODE_LIFETIME = timedelta(minutes=10)  # "Typically, they expire after about 10 minutes."
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")

Refusal = Literal[
    "unknown", "redeemed", "expired", "client", "redirect_uri", "no_verifier", "verifier"
]


@dataclass(frozen=True)
class SignIn:
    """What the next authorization does: approve ``user`` (None: the login hint or the sole
    user) or deny as a user pressing Cancel would."""

    user: str | None = None
    deny: bool = False


@dataclass(frozen=True)
class AuthorizationRequest:
    """The parameters of a GET on the authorization endpoint that the emulators act on."""

    client_id: str
    redirect_uri: str
    response_type: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str | None
    code_challenge_method: str
    login_hint: str | None
    nonce: str | None
    access_type: str | None


class RequestError(ValueError):
    """The request cannot be answered by a redirect (no usable client or redirect_uri)."""


def parse_request(query: Mapping[str, str]) -> AuthorizationRequest:
    """The request's parameters; RequestError when there is nowhere safe to redirect to."""
    client_id = query.get("client_id", "")
    redirect_uri = query.get("redirect_uri", "")
    if not client_id:
        raise RequestError("Missing required parameter: client_id")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise RequestError("Missing or invalid parameter: redirect_uri")
    return AuthorizationRequest(
        client_id=client_id,
        redirect_uri=redirect_uri,
        response_type=query.get("response_type", ""),
        scopes=tuple(query.get("scope", "").split()),
        state=query.get("state"),
        code_challenge=query.get("code_challenge") or None,
        code_challenge_method=query.get("code_challenge_method") or "plain",
        login_hint=query.get("login_hint") or None,
        nonce=query.get("nonce") or None,
        access_type=query.get("access_type") or None,
    )


def request_problem(request: AuthorizationRequest) -> tuple[str, str] | None:
    """The (error, description) the client gets redirected with, or None if acceptable."""
    if request.response_type != "code":
        return "unsupported_response_type", "Only response_type=code is supported."
    if not request.scopes:
        return "invalid_request", "Missing required parameter: scope"
    if request.code_challenge_method not in ("S256", "plain"):
        return "invalid_request", "Invalid code_challenge_method."
    return None


def redirect_url(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` added to its query (None values left out)."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    """RFC 7636 4.6: the verifier transformed by ``method`` equals the challenge."""
    if not _VERIFIER.fullmatch(verifier):
        return False
    derived = b64url(hashlib.sha256(verifier.encode()).digest()) if method == "S256" else verifier
    return secrets.compare_digest(derived, challenge)


@dataclass(frozen=True)
class Approval:
    """What the user approved: redeemed for tokens by the token endpoint."""

    user: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    offline: bool


@dataclass
class _Code:
    approval: Approval
    expires_at: datetime
    redeemed: bool = False


class CodeRefused(Exception):
    """The code cannot be redeemed; ``reason`` says why (each emulator words it its own way)."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason)
        self.reason: Refusal = reason


class Authorizations:
    """Queued sign-ins and issued codes of one emulator."""

    def __init__(self, lifetime: timedelta = CODE_LIFETIME) -> None:
        self.lifetime = lifetime
        self._sign_ins: deque[SignIn] = deque()
        self._codes: dict[str, _Code] = {}

    def queue_sign_in(self, sign_in: SignIn) -> None:
        self._sign_ins.append(sign_in)

    def next_sign_in(self) -> SignIn | None:
        """The oldest queued sign-in, consumed; None when none is queued."""
        return self._sign_ins.popleft() if self._sign_ins else None

    def issue(self, approval: Approval, now: datetime) -> str:
        self._drop_dead(now)
        code = "4/0" + secrets.token_urlsafe(48)
        self._codes[code] = _Code(approval, now + self.lifetime)
        return code

    def redeem(
        self,
        code: str,
        *,
        client_id: str,
        redirect_uri: str,
        verifier: str | None,
        now: datetime,
    ) -> Approval:
        """The approval behind ``code``, which is consumed; CodeRefused otherwise."""
        record = self._codes.get(code)
        if record is None:
            raise CodeRefused("unknown")
        if record.redeemed:
            raise CodeRefused("redeemed")
        record.redeemed = True
        approval = record.approval
        if record.expires_at <= now:
            raise CodeRefused("expired")
        if approval.client_id != client_id:
            raise CodeRefused("client")
        if approval.redirect_uri != redirect_uri:
            raise CodeRefused("redirect_uri")
        if approval.code_challenge is not None:
            if not verifier:
                raise CodeRefused("no_verifier")
            if not pkce_matches(verifier, approval.code_challenge, approval.code_challenge_method):
                raise CodeRefused("verifier")
        return approval

    def _drop_dead(self, now: datetime) -> None:
        # Dead codes linger one more lifetime: a late attempt reads "redeemed" or "expired".
        horizon = now - self.lifetime
        for code in [c for c, r in self._codes.items() if r.expires_at <= horizon]:
            del self._codes[code]
