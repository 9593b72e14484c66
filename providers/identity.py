"""Reading who an id_token names (pure): its claims, checked, and the account's stable subject.

An id_token here always comes straight from the provider's token endpoint over TLS, with our
client's authentication (the connect flow's code grant, an actor's refresh grant): OpenID
Connect allows trusting such a token on TLS instead of its signature, so none is checked.

Invariants:
- a subject is returned only from claims issued to our client (``aud``), by an accepted issuer
  (``iss``), not expired at ``now`` (``exp``, with ``EXP_SKEW_S`` of slack), naming every claim
  the kind's ``Identity.subject_claims`` lists; anything else is ``IdentityError``;
- error messages name the check that failed, never a claim's value or the token.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from providers.capabilities import Identity

EXP_SKEW_S = 60  # the provider's clock and ours may differ this much


class IdentityError(ValueError):
    """The id_token does not name a user we may bind; the message is safe to log."""


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, its signature not checked; IdentityError if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:  # header.payload.signature
        raise IdentityError("id_token is not a JWT")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        raise IdentityError("id_token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise IdentityError("id_token payload is not an object")
    return claims


def tenant_issuer(template: str, claims: Mapping[str, Any]) -> str:
    """A per-tenant issuer (Entra's ``.../{tenantid}/v2.0``) for the token's ``tid``."""
    return template.replace("{tenantid}", str(claims.get("tid", "")))


def stable_subject(
    claims: Mapping[str, Any],
    rule: Identity,
    *,
    client_id: str,
    issuers: tuple[str, ...],
    now: float,
) -> str:
    """The subject ``claims`` name under ``rule``, after checking ``aud``, ``exp`` and ``iss``
    (one of ``issuers``)."""
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise IdentityError("id_token was not issued to this client")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires + EXP_SKEW_S <= now:
        raise IdentityError("id_token expired")
    if not issuers or claims.get("iss") not in issuers:
        raise IdentityError("id_token was not issued by the provider")
    parts = [claims.get(claim) for claim in rule.subject_claims]
    if not all(isinstance(part, str) and part.strip() for part in parts):
        raise IdentityError("id_token names no stable subject")
    return ":".join(str(part).strip() for part in parts)
