"""The host's start tokens and our signed results (pure): who may start the connect flow, and
what the host gets back.

The host application mints a start token (an API call, or HMAC-SHA256 with the shared
``IW_OAUTH_START_SECRET`` itself): it names the provider, the host's user reference, a
``return_state`` and a nonce, and lives at most ``MAX_START_TTL_S``. ``/oauth/{provider}/start``
accepts nothing else. When the flow succeeds, the browser is sent back with a result signed the
same way: the account, the user reference and the ``return_state``, with its own nonce and a
short expiry, so the host can tell it came from us, for this start, once.

Invariants:
- a token is ``base64url(JSON claims) "." base64url(HMAC-SHA256(secret, that base64url))``
  (``connect.signed``, the flow cookie's format); the claims carry ``typ`` (``start`` or
  ``result``), so one kind is never taken for the other;
- ``open_start`` refuses (``StartRefused`` with a reason safe to show) a token that is
  malformed, not signed with the secret, of another type, expired, or that lives longer than
  ``MAX_START_TTL_S``; single use is the caller's (it records the nonce);
- nothing here logs or formats a secret or a token.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal

from connect.signed import Unsealed, seal, unseal

MAX_START_TTL_S = 600  # ten minutes
RESULT_TTL_S = 300
_SKEW_S = 30  # clocks of the host and ours may differ this much

Reason = Literal["missing", "malformed", "signature", "type", "expired", "too_long"]


class StartRefused(Exception):
    """The start token is not acceptable; ``reason`` is safe to show."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class StartClaims:
    """What the host asks for: connect ``provider`` for its user ``user_ref``."""

    provider: str
    user_ref: str
    return_state: str
    expires_at: int  # Unix seconds
    nonce: str


@dataclass(frozen=True, slots=True)
class ResultClaims:
    """What we hand back: the account connected for ``user_ref``."""

    account_id: str
    provider: str
    user_ref: str
    return_state: str
    expires_at: int
    nonce: str


def _seal(secret: bytes, typ: str, claims: StartClaims | ResultClaims) -> str:
    return seal(secret, {"typ": typ, **asdict(claims)})


def _open(secret: bytes, token: str | None, typ: str) -> dict[str, Any]:
    try:
        claims = unseal(secret, token, max_chars=4096)
    except Unsealed as refused:
        raise StartRefused(refused.reason) from None
    if claims.pop("typ", None) != typ:
        raise StartRefused("type")
    return claims


def mint_start(
    secret: bytes, *, provider: str, user_ref: str, return_state: str, now: float, ttl_s: int
) -> str:
    """A start token (what the host mints; the admin API mints one for hosts that ask)."""
    if not 0 < ttl_s <= MAX_START_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_START_TTL_S}]")
    claims = StartClaims(provider, user_ref, return_state, int(now) + ttl_s, secrets.token_hex(16))
    return _seal(secret, "start", claims)


def open_start(secret: bytes, token: str | None, *, now: float) -> StartClaims:
    """The claims of a start token this secret signed, still valid at ``now``."""
    raw = _open(secret, token, "start")
    try:
        claims = StartClaims(**raw)
        fields = (claims.provider, claims.user_ref, claims.return_state, claims.nonce)
        if not all(isinstance(f, str) for f in fields) or not isinstance(claims.expires_at, int):
            raise TypeError
    except TypeError:
        raise StartRefused("malformed") from None
    if not claims.nonce or len(claims.user_ref) > 512 or len(claims.return_state) > 1024:
        raise StartRefused("malformed")
    if claims.expires_at <= now:
        raise StartRefused("expired")
    if claims.expires_at > now + MAX_START_TTL_S + _SKEW_S:
        raise StartRefused("too_long")
    return claims


def seal_result(secret: bytes, start: StartClaims, *, account_id: str, now: float) -> str:
    """The signed result the browser carries back to the host."""
    claims = ResultClaims(
        account_id,
        start.provider,
        start.user_ref,
        start.return_state,
        int(now) + RESULT_TTL_S,
        secrets.token_hex(16),
    )
    return _seal(secret, "result", claims)


def open_result(secret: bytes, token: str, *, now: float) -> ResultClaims:
    """What the host does with a result: its claims, if we signed it and it has not expired."""
    raw = _open(secret, token, "result")
    try:
        claims = ResultClaims(**raw)
    except TypeError:
        raise StartRefused("malformed") from None
    if claims.expires_at <= now:
        raise StartRefused("expired")
    return claims
