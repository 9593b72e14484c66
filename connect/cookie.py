"""The flow cookie (pure): binds a started flow (provider, state, PKCE verifier, nonce) to the
browser that started it, signed with an HMAC-SHA256 key and time-limited.

Invariants: ``open_flow`` accepts only a value this key signed, for the provider of the
callback, younger than ``max_age_s`` and whose state equals the callback's (both compared in
constant time); anything else is a ``FlowRefused`` with a reason safe to show. The value is
signed, not encrypted: it holds nothing the browser's user may not see (the verifier only
proves that the code was asked for by this browser's flow).
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass, field
from typing import Literal

from connect.signed import Unsealed, seal, unseal

COOKIE_NAME = "iw_oauth_flow"

Reason = Literal["missing", "malformed", "signature", "provider", "expired", "state"]


@dataclass(frozen=True)
class Flow:
    """One started flow, as the callback needs it back."""

    provider: str
    state: str = field(repr=False)
    verifier: str = field(repr=False)
    nonce: str = field(repr=False)
    started_at: float
    # From the host's start token: whom the account is for, and what to hand back.
    user_ref: str = ""
    return_state: str = field(default="", repr=False)


class FlowRefused(Exception):
    """The callback does not belong to a flow this browser started; ``reason`` says why."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def seal_flow(key: bytes, flow: Flow) -> str:
    """The cookie value: urlsafe-base64 JSON of the flow, a dot, its HMAC."""
    return seal(key, asdict(flow))


def open_flow(
    key: bytes,
    value: str | None,
    *,
    provider: str,
    state: str | None,
    now: float,
    max_age_s: float,
) -> Flow:
    """The flow sealed in ``value`` if it matches this callback; FlowRefused otherwise."""
    try:
        flow = Flow(**unseal(key, value))
    except Unsealed as refused:
        raise FlowRefused(refused.reason) from None
    except TypeError:
        raise FlowRefused("malformed") from None
    if flow.provider != provider:
        raise FlowRefused("provider")
    if not 0 <= now - flow.started_at <= max_age_s:
        raise FlowRefused("expired")
    if state is None or not hmac.compare_digest(flow.state.encode(), state.encode()):
        raise FlowRefused("state")
    return flow
