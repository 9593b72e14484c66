"""The OAuth connect flow's pure parts: PKCE, the flow cookie, the authorization URL, the
callback, the token form and the identity read from an id_token (no server, no loop)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from config.settings import ConfigError, load_settings
from connect.cookie import Flow, FlowRefused, open_flow, seal_flow
from connect.endpoints import provider_clients
from connect.pkce import new_nonce, new_state, new_verifier, s256_challenge
from connect.protocol import (
    AnswerError,
    Approved,
    Denied,
    ProviderClient,
    TokenAnswer,
    UserIdentity,
    authorization_url,
    identity,
    parse_callback,
    parse_token_answer,
    token_form,
)
from connect.start_token import StartRefused, mint_start, open_start, seal_result
from providers import google, microsoft

KEY = b"k" * 32
GOOGLE = ProviderClient(
    "google",
    "gid",
    "gsecret",
    ("openid", "email", "cal"),
    (("access_type", "offline"),),
    capabilities=google.CAPABILITIES,
)
MICROSOFT = ProviderClient(
    "microsoft",
    "mid",
    "msecret",
    ("openid", "offline_access", "Cal"),
    capabilities=microsoft.CAPABILITIES,
)


def _flow(**changes: Any) -> Flow:
    values: dict[str, Any] = {
        "provider": "google",
        "state": "the-state",
        "verifier": "v" * 43,
        "nonce": "n-1",
        "started_at": 1000.0,
    }
    values.update(changes)
    return Flow(**values)


def _open(value: str | None, **changes: Any) -> Flow:
    options: dict[str, Any] = {
        "provider": "google",
        "state": "the-state",
        "now": 1010.0,
        "max_age_s": 600.0,
    }
    options.update(changes)
    return open_flow(KEY, value, **options)


def _jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_verifier_and_challenge_follow_rfc7636() -> None:
    verifier = new_verifier()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    # RFC 7636 appendix B's example pair.
    known = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(known) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert new_verifier() != verifier
    assert new_state() != new_state()
    assert new_nonce() != new_nonce()


def test_a_sealed_flow_opens_for_its_own_callback() -> None:
    flow = _flow()
    assert _open(seal_flow(KEY, flow)) == flow


@pytest.mark.parametrize(
    ("value", "changes", "reason"),
    [
        (None, {}, "missing"),
        ("", {}, "missing"),
        ("no-dot", {}, "malformed"),
        ("x.y", {}, "signature"),
        ("SEALED", {"provider": "microsoft"}, "provider"),
        ("SEALED", {"now": 1601.0}, "expired"),
        ("SEALED", {"now": 990.0}, "expired"),
        ("SEALED", {"state": "another-state"}, "state"),
        ("SEALED", {"state": None}, "state"),
    ],
)
def test_a_flow_is_refused(value: str | None, changes: dict[str, Any], reason: str) -> None:
    if value == "SEALED":
        value = seal_flow(KEY, _flow())
    with pytest.raises(FlowRefused) as caught:
        _open(value, **changes)
    assert caught.value.reason == reason


def test_a_cookie_under_another_key_or_edited_is_refused() -> None:
    sealed = seal_flow(b"other" * 8, _flow())
    with pytest.raises(FlowRefused, match="signature"):
        _open(sealed)
    payload, _, mac = seal_flow(KEY, _flow()).partition(".")
    forged = seal_flow(KEY, _flow(state="attacker")).partition(".")[0]
    with pytest.raises(FlowRefused, match="signature"):
        _open(f"{forged}.{mac}", state="attacker")
    assert payload != forged


def test_the_flow_repr_hides_its_secrets() -> None:
    text = repr(_flow())
    assert "the-state" not in text and "vvvv" not in text and "n-1" not in text


def test_the_authorization_url_carries_state_pkce_and_nonce() -> None:
    url = authorization_url(
        GOOGLE,
        "https://accounts.example/o/oauth2/v2/auth?hd=x",
        redirect_uri="https://us.example/oauth/google/callback",
        state="s1",
        challenge="c1",
        nonce="n1",
    )
    parts = urlsplit(url)
    assert parts.netloc == "accounts.example" and parts.path == "/o/oauth2/v2/auth"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "hd": "x",
        "client_id": "gid",
        "response_type": "code",
        "redirect_uri": "https://us.example/oauth/google/callback",
        "scope": "openid email cal",
        "state": "s1",
        "nonce": "n1",
        "code_challenge": "c1",
        "code_challenge_method": "S256",
        "access_type": "offline",
    }


def test_the_callback_query_is_a_code_or_an_error() -> None:
    assert parse_callback({"code": "abc", "state": "s"}) == Approved("abc")
    assert parse_callback({"error": "access_denied", "code": "abc"}) == Denied("access_denied")
    assert parse_callback({"state": "s"}) == Denied("missing_code")
    assert "abc" not in repr(Approved("abc"))


def test_the_token_form_names_the_grant_and_the_verifier() -> None:
    form = token_form(GOOGLE, code="c", redirect_uri="https://r", verifier="v")
    assert form == {
        "grant_type": "authorization_code",
        "code": "c",
        "redirect_uri": "https://r",
        "client_id": "gid",
        "client_secret": "gsecret",
        "code_verifier": "v",
    }
    assert token_form(MICROSOFT, code="c", redirect_uri="r", verifier="v")["scope"] == (
        "openid offline_access Cal"
    )


def test_a_token_answer_needs_an_access_token_and_hides_it() -> None:
    answer = parse_token_answer(b'{"access_token": "at-123", "refresh_token": "rt-456"}')
    assert answer.refresh_token == "rt-456"
    assert "at-123" not in repr(answer) and "rt-456" not in str(answer)
    with pytest.raises(AnswerError):
        parse_token_answer(b'{"token_type": "Bearer"}')
    with pytest.raises(AnswerError):
        parse_token_answer(b"<html>")


def _answer(claims: dict[str, Any]) -> TokenAnswer:
    return TokenAnswer(access_token="at", id_token=_jwt(claims))


GOOGLE_ISS = "https://accounts.google.com"
ENTRA = "https://login.microsoftonline.com/{tenantid}/v2.0"  # the common authority's issuer
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def test_google_identity_is_the_sub_listed_by_the_verified_email() -> None:
    claims = {
        "aud": "gid",
        "nonce": "n",
        "iss": GOOGLE_ISS,
        "sub": "1065",
        "exp": 2000,
        "email": "a@example.com",
        "email_verified": True,
    }
    assert identity(GOOGLE, _answer(claims), "n", now=1000) == UserIdentity("1065", "a@example.com")
    assert (
        identity(GOOGLE, _answer(claims | {"iss": "accounts.google.com"}), "n", now=1000).subject
        == "1065"
    )
    with pytest.raises(AnswerError, match="not verified"):
        identity(GOOGLE, _answer({**claims, "email_verified": False}), "n", now=1000)
    with pytest.raises(AnswerError, match="not issued by the provider"):
        identity(GOOGLE, _answer(claims | {"iss": "https://evil.example"}), "n", now=1000)
    with pytest.raises(AnswerError, match="expired"):
        identity(GOOGLE, _answer(claims), "n", now=2100)
    with pytest.raises(AnswerError, match="stable subject"):
        identity(GOOGLE, _answer({k: v for k, v in claims.items() if k != "sub"}), "n", now=1000)


def test_microsoft_identity_is_tenant_and_object_id_listed_by_the_preferred_username() -> None:
    claims = {
        "aud": ["mid"],
        "nonce": "n",
        "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "tid": TENANT,
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "exp": 2000,
        "preferred_username": "b@contoso.example",
    }
    who = identity(MICROSOFT, _answer(claims), "n", issuer=ENTRA, now=1000)
    assert who == UserIdentity(f"{TENANT}:{claims['oid']}", "b@contoso.example")
    other_tenant = claims | {"tid": "11111111-2222-3333-4444-555555555555"}
    with pytest.raises(AnswerError, match="not issued by the provider"):
        # The iss names the old tenant.
        identity(MICROSOFT, _answer(other_tenant), "n", issuer=ENTRA, now=1000)
    with pytest.raises(AnswerError, match="not issued by the provider"):
        identity(MICROSOFT, _answer(claims), "n", now=1000)  # no issuer known: nothing to accept


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "other", "nonce": "n", "preferred_username": "b"}, "not issued to this client"),
        ({"aud": "mid", "nonce": "replayed", "preferred_username": "b"}, "nonce"),
        (
            {"aud": "mid", "nonce": "n", "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0"}
            | {"tid": TENANT, "oid": "o", "exp": 2000},
            "names no user",
        ),
    ],
)
def test_an_id_token_for_another_client_or_flow_is_refused(
    claims: dict[str, Any], message: str
) -> None:
    with pytest.raises(AnswerError, match=message):
        identity(MICROSOFT, _answer(claims), "n", issuer=ENTRA, now=1000)


def test_answers_without_a_usable_id_token_are_refused() -> None:
    with pytest.raises(AnswerError, match="no id_token"):
        identity(MICROSOFT, TokenAnswer(access_token="at"), "n", now=1000)
    with pytest.raises(AnswerError, match="not a JWT"):
        identity(MICROSOFT, TokenAnswer(access_token="at", id_token="opaque"), "n", now=1000)


def test_providers_are_served_only_with_a_configured_client() -> None:
    settings = load_settings(google_client_id="gid", google_client_secret="gs")
    clients = provider_clients(settings)
    assert list(clients) == ["google"]
    assert clients["google"].scopes == (
        "openid",
        "email",
        "https://www.googleapis.com/auth/calendar",
    )
    assert dict(clients["google"].extra_params) == {"access_type": "offline", "prompt": "consent"}
    settings = load_settings(
        microsoft_client_id="mid",
        microsoft_client_secret="ms-secret-value",
        microsoft_scopes=["https://graph.microsoft.com/Calendars.ReadWrite", "openid"],
    )
    microsoft = provider_clients(settings)["microsoft"]
    assert microsoft.scopes == (
        "openid",
        "profile",
        "email",
        "offline_access",
        "https://graph.microsoft.com/Calendars.ReadWrite",
    )
    assert "ms-secret-value" not in repr(microsoft)


def test_the_flow_needs_a_state_secret_and_a_public_url_when_enabled() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(oauth_connect_enabled=True, oauth_state_secret="short")
    message = str(caught.value)
    assert "IW_OAUTH_STATE_SECRET" in message and "IW_OAUTH_REDIRECT_BASE_URL" in message
    assert "IW_OAUTH_START_SECRET" in message  # the host's start tokens are signed with it
    assert "short" not in message
    settings = load_settings(
        oauth_connect_enabled=True,
        oauth_state_secret="s" * 32,
        oauth_start_secret="t" * 32,
        oauth_redirect_base_url="https://us.example/base/",
    )
    assert settings.oauth_redirect_base_url == "https://us.example/base"
    assert {"s" * 32, "t" * 32} <= set(settings.secret_values())
    assert not load_settings().oauth_connect_enabled


def test_start_tokens_open_only_as_minted_and_within_ten_minutes() -> None:
    secret = b"k" * 32
    token = mint_start(
        secret, provider="google", user_ref="u1", return_state="r", now=1000, ttl_s=600
    )
    claims = open_start(secret, token, now=1001)
    assert (claims.provider, claims.user_ref, claims.return_state) == ("google", "u1", "r")
    assert len(claims.nonce) == 32
    for bad, reason in (
        (None, "missing"),
        ("no-dot", "malformed"),
        (token[:-2] + "xx", "signature"),
    ):
        with pytest.raises(StartRefused) as refused:
            open_start(secret, bad, now=1001)
        assert refused.value.reason == reason
    with pytest.raises(StartRefused, match="expired"):
        open_start(secret, token, now=1600)
    result = seal_result(secret, claims, account_id="a1", now=1001)
    with pytest.raises(StartRefused, match="type"):
        open_start(secret, result, now=1001)  # a result is never a start token
    with pytest.raises(ValueError, match="ttl_s"):
        mint_start(secret, provider="g", user_ref="u", return_state="", now=0, ttl_s=601)
