"""The provider side of the flow as data (pure): the client's registration, the authorization
URL, the callback's query, the token endpoint's form and answer, and the user's identity.

Invariants: the authorization request always carries ``state``, an S256 PKCE challenge and an
OpenID ``nonce``; the identity comes only from an id_token issued to our client (``aud``) for
this flow (``nonce``) by the provider (``iss``) and not expired (``exp``): its stable subject
(Google ``sub``, Entra ``tid``:``oid``) binds the account, its display name (Google's verified
``email``, Microsoft's ``preferred_username``) lists it. It is read without a signature check,
as OpenID Connect allows for an id_token received directly from the token endpoint over TLS
with client authentication; nothing here logs or formats a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from providers.capabilities import Capabilities
from providers.identity import IdentityError, jwt_claims, stable_subject, tenant_issuer

# Microsoft: openid/profile for the id_token and preferred_username, offline_access for the
# refresh token (v2-oauth2-auth-code-flow: "Only provided if offline_access scope was requested").
MICROSOFT_OIDC_SCOPES = ("openid", "profile", "email", "offline_access")


@dataclass(frozen=True)
class ProviderClient:
    """Our registration at one provider and how its flow is asked for."""

    provider: str  # the account kind
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...]
    # Provider-specific authorization parameters (Google: access_type=offline, prompt=consent).
    extra_params: tuple[tuple[str, str], ...] = ()
    # What the provider declares: which id_token claims name the account, grant quirks.
    capabilities: Capabilities = field(kw_only=True)


@dataclass(frozen=True)
class Endpoints:
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None  # from the discovery document, when there is one


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """Who signed in: the stable ``subject`` the account is bound to, and its display name."""

    subject: str
    email: str


def authorization_url(
    client: ProviderClient,
    endpoint: str,
    *,
    redirect_uri: str,
    state: str,
    challenge: str,
    nonce: str,
) -> str:
    """Where the browser goes to sign in: ``endpoint`` plus the request's query."""
    params = [
        ("client_id", client.client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(client.scopes)),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        *client.extra_params,
    ]
    parts = urlsplit(endpoint)
    query = "&".join(filter(None, (parts.query, urlencode(params))))
    return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True)
class Approved:
    code: str = field(repr=False)


@dataclass(frozen=True)
class Denied:
    """The provider redirected back with an OAuth error (the user declined, or a bad request)."""

    error: str


def parse_callback(query: Mapping[str, str]) -> Approved | Denied:
    """What the provider said on the redirect; an error wins over a code, as RFC 6749 4.1.2.1."""
    error = query.get("error")
    if error:
        return Denied(error[:64])
    code = query.get("code")
    if not code:
        return Denied("missing_code")
    return Approved(code)


def token_form(
    client: ProviderClient, *, code: str, redirect_uri: str, verifier: str
) -> dict[str, str]:
    """The authorization_code grant's form (client_secret_post, which both providers accept)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "code_verifier": verifier,
    }
    if client.capabilities.scope_in_token_grant:
        form["scope"] = " ".join(client.scopes)  # optional at Microsoft; names the resource
    return form


class TokenAnswer(BaseModel):
    """The token endpoint's successful answer, as far as the flow reads it."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None

    def __repr__(self) -> str:
        return "TokenAnswer(...)"

    __str__ = __repr__


class AnswerError(ValueError):
    """The token endpoint's answer is not what the flow needs; the message is safe to log."""


def parse_token_answer(body: bytes) -> TokenAnswer:
    try:
        return TokenAnswer.model_validate_json(body)
    except ValidationError:
        raise AnswerError("token answer is not a JSON object with an access_token") from None


def identity(
    client: ProviderClient,
    answer: TokenAnswer,
    nonce: str,
    *,
    issuer: str | None = None,
    now: float,
) -> UserIdentity:
    """Who the answer's id_token names, checked: issued to our client (``aud``) by the provider
    (``iss``, the capabilities' issuers or the discovery document's ``issuer``), for this flow
    (``nonce``), not expired at ``now`` (``exp``); its stable subject and display name."""
    if answer.id_token is None:
        raise AnswerError("no id_token in the token answer")
    rule = client.capabilities.identity
    try:
        claims = jwt_claims(answer.id_token)
        if claims.get("nonce") != nonce:
            raise AnswerError("id_token nonce does not match the flow")
        accepted = rule.issuers
        if not accepted and issuer is not None:
            accepted = (tenant_issuer(issuer, claims),)
        subject = stable_subject(
            claims,
            rule,
            client_id=client.client_id,
            issuers=accepted,
            now=now,
        )
    except IdentityError as exc:
        raise AnswerError(str(exc)) from None
    if rule.verified_by is not None and claims.get(rule.verified_by) not in (True, "true"):
        # Google: use the email only when Google verified it.
        raise AnswerError("id_token email is not verified")
    for claim in rule.claims:
        name = claims.get(claim)
        if isinstance(name, str) and name.strip():
            return UserIdentity(subject, name.strip())
    raise AnswerError("id_token names no user")
