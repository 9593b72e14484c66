"""The emulators' authorization-code book (pure): single use, lifetime, binding to client,
redirect URI and PKCE challenge; request parsing and redirects."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from connect.pkce import s256_challenge
from sandbox.emulators.shared.authorization import (
    Approval,
    Authorizations,
    CodeRefused,
    RequestError,
    SignIn,
    parse_request,
    pkce_matches,
    redirect_url,
    request_problem,
)

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
VERIFIER = "a" * 43
APPROVAL = Approval(
    user="u@example.com",
    client_id="c",
    redirect_uri="https://app.example/cb",
    scopes=("openid",),
    code_challenge=s256_challenge(VERIFIER),
    code_challenge_method="S256",
    nonce="n",
    offline=True,
)


def _redeem(book: Authorizations, code: str, **changes: object) -> Approval:
    options: dict[str, object] = {
        "client_id": "c",
        "redirect_uri": "https://app.example/cb",
        "verifier": VERIFIER,
        "now": NOW + timedelta(seconds=5),
    }
    options.update(changes)
    return book.redeem(code, **options)  # type: ignore[arg-type]


def test_a_code_redeems_once() -> None:
    book = Authorizations()
    code = book.issue(APPROVAL, NOW)
    assert _redeem(book, code) == APPROVAL
    with pytest.raises(CodeRefused) as caught:
        _redeem(book, code)
    assert caught.value.reason == "redeemed"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"client_id": "other"}, "client"),
        ({"redirect_uri": "https://app.example/cb2"}, "redirect_uri"),
        ({"verifier": None}, "no_verifier"),
        ({"verifier": "b" * 43}, "verifier"),
        ({"verifier": "short"}, "verifier"),
        ({"now": NOW + timedelta(minutes=10)}, "expired"),
    ],
)
def test_a_refused_redemption_spends_the_code(changes: dict[str, object], reason: str) -> None:
    book = Authorizations()
    code = book.issue(APPROVAL, NOW)
    with pytest.raises(CodeRefused) as caught:
        _redeem(book, code, **changes)
    assert caught.value.reason == reason
    with pytest.raises(CodeRefused) as again:
        _redeem(book, code)
    assert again.value.reason == "redeemed"


def test_unknown_codes_and_plain_challenges() -> None:
    book = Authorizations()
    with pytest.raises(CodeRefused, match="unknown"):
        _redeem(book, "4/0nothing")
    plain = replace(APPROVAL, code_challenge=VERIFIER, code_challenge_method="plain")
    assert _redeem(book, book.issue(plain, NOW)) == plain
    without = replace(APPROVAL, code_challenge=None)
    assert _redeem(book, book.issue(without, NOW), verifier=None) == without
    assert pkce_matches(VERIFIER, s256_challenge(VERIFIER), "S256")
    assert not pkce_matches(VERIFIER, VERIFIER, "S256")


def test_sign_ins_are_used_in_order() -> None:
    book = Authorizations()
    assert book.next_sign_in() is None
    book.queue_sign_in(SignIn("a@example.com"))
    book.queue_sign_in(SignIn(deny=True))
    assert book.next_sign_in() == SignIn("a@example.com")
    assert book.next_sign_in() == SignIn(None, deny=True)
    assert book.next_sign_in() is None


def test_requests_and_redirects() -> None:
    with pytest.raises(RequestError):
        parse_request({"redirect_uri": "https://a/cb"})
    with pytest.raises(RequestError):
        parse_request({"client_id": "c", "redirect_uri": "javascript:alert(1)"})
    request = parse_request(
        {"client_id": "c", "redirect_uri": "https://a/cb", "response_type": "code", "scope": "x y"}
    )
    assert request.scopes == ("x", "y") and request.code_challenge_method == "plain"
    assert request_problem(request) is None
    assert request_problem(replace(request, response_type="token")) == (
        "unsupported_response_type",
        "Only response_type=code is supported.",
    )
    assert request_problem(replace(request, scopes=()))[0] == "invalid_request"  # type: ignore[index]
    assert redirect_url("https://a/cb?x=1", {"code": "c d", "state": None}) == (
        "https://a/cb?x=1&code=c+d"
    )
