"""The emulators' authorization-code grant as a client following the documentation sees it:
redirects, token answers and refusals; and msal's own auth-code flow against the Microsoft
emulator (a documented client, not ours)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import msal
import pytest
import requests

from connect.pkce import s256_challenge
from sandbox.emulators.google.server import GoogleEmulator
from sandbox.emulators.microsoft.server import MicrosoftEmulator
from sandbox.emulators.microsoft.tokens import jwt_claims

CLIENT_ID, CLIENT_SECRET = "emu-client", "emu-secret"
REDIRECT = "http://127.0.0.1:9/cb"
VERIFIER = "v" * 50
GOOGLE_USER, MICROSOFT_USER = "ada@example.com", "grace@contoso.example"
GRAPH_SCOPE = "https://graph.microsoft.com/Calendars.ReadWrite"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _authorize(
    http: aiohttp.ClientSession, url: str, params: dict[str, str], ssl: Any = None
) -> tuple[int, dict[str, str], str]:
    """GET the authorization endpoint: status, the redirect's query, the body."""
    target = f"{url}?{urlencode(params)}" if params else url
    async with http.get(target, allow_redirects=False, ssl=ssl) as answer:
        location = answer.headers.get("Location", "")
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        return answer.status, query, await answer.text()


async def _token(
    http: aiohttp.ClientSession, url: str, form: dict[str, str], ssl: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, data=form, ssl=ssl) as answer:
        return answer.status, await answer.json()


def _google_request(**changes: str) -> dict[str, str]:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email https://www.googleapis.com/auth/calendar",
        "state": "st-1",
        "nonce": "no-1",
        "access_type": "offline",
        "code_challenge": s256_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(changes)
    return params


def _code_form(code: str, **changes: str) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    form.update(changes)
    return form


async def test_google_code_grant_follows_the_web_server_flow(http: aiohttp.ClientSession) -> None:
    async with GoogleEmulator() as emu:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        emu.control.add_user(GOOGLE_USER, CLIENT_ID)
        status, query, _ = await _authorize(http, emu.auth_uri, _google_request())
        assert status == 302 and query["state"] == "st-1"
        status, body = await _token(http, emu.token_uri, _code_form(query["code"]))
        assert status == 200, body
        assert body["refresh_token"] and body["access_token"] and body["token_type"] == "Bearer"
        claims = jwt_claims(body["id_token"])
        assert claims["email"] == GOOGLE_USER and claims["email_verified"] is True
        assert claims["aud"] == CLIENT_ID and claims["nonce"] == "no-1"
        assert claims["iss"] == "https://accounts.google.com"
        # The refresh token works for the refresh grant.
        status, refreshed = await _token(
            http,
            emu.token_uri,
            {
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
        assert status == 200 and "refresh_token" not in refreshed

        # Online access: no refresh token; no openid: no id_token.
        online = _google_request(
            access_type="online", scope="https://www.googleapis.com/auth/calendar"
        )
        _, query, _ = await _authorize(http, emu.auth_uri, online)
        status, body = await _token(http, emu.token_uri, _code_form(query["code"]))
        assert status == 200 and "refresh_token" not in body and "id_token" not in body


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"redirect_uri": "http://127.0.0.1:9/other"}, 400, "redirect_uri_mismatch"),
        ({"code_verifier": ""}, 400, "invalid_grant"),
        ({"code_verifier": "w" * 50}, 400, "invalid_grant"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"redirect_uri": ""}, 400, "invalid_request"),
    ],
)
async def test_google_refuses_codes_as_documented(
    http: aiohttp.ClientSession, form: dict[str, str], status: int, error: str
) -> None:
    async with GoogleEmulator() as emu:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        emu.control.add_user(GOOGLE_USER, CLIENT_ID)
        _, query, _ = await _authorize(http, emu.auth_uri, _google_request())
        answer_status, body = await _token(http, emu.token_uri, _code_form(query["code"], **form))
        assert (answer_status, body["error"]) == (status, error)


async def test_google_authorization_errors(http: aiohttp.ClientSession) -> None:
    async with GoogleEmulator() as emu:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        emu.control.add_user(GOOGLE_USER, CLIENT_ID)
        emu.control.add_user("bob@example.com", CLIENT_ID)
        # Nowhere safe to redirect: an error page, no redirect.
        status, query, _ = await _authorize(http, emu.auth_uri, _google_request(client_id="nobody"))
        assert status == 401 and not query
        status, query, _ = await _authorize(http, emu.auth_uri, _google_request(redirect_uri="x"))
        assert status == 400 and not query
        # Two users and no hint: nobody to sign in without UI.
        status, _, text = await _authorize(http, emu.auth_uri, _google_request())
        assert status == 400 and "login_hint" in text
        status, query, _ = await _authorize(
            http, emu.auth_uri, _google_request(login_hint="bob@example.com")
        )
        assert status == 302 and "code" in query
        # Errors the client can act on come back to it, with its state.
        status, query, _ = await _authorize(
            http, emu.auth_uri, _google_request(response_type="token", login_hint=GOOGLE_USER)
        )
        assert query == {"error": "unsupported_response_type", "state": "st-1"}
        # The control API over HTTP: the next sign-in declines.
        body = {"email": GOOGLE_USER, "deny": True}
        async with http.post(emu.control_url + "sign_ins", json=body) as answer:
            assert answer.status == 204
        _, query, _ = await _authorize(http, emu.auth_uri, _google_request())
        assert query == {"error": "access_denied", "state": "st-1"}


async def test_microsoft_code_grant_follows_the_auth_code_flow(
    http: aiohttp.ClientSession,
) -> None:
    async with MicrosoftEmulator() as emu:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        emu.control.add_user(MICROSOFT_USER, CLIENT_ID)
        ssl = emu.ssl_context()
        async with http.get(
            f"{emu.authority}/v2.0/.well-known/openid-configuration", ssl=ssl
        ) as answer:
            authorize_url = (await answer.json())["authorization_endpoint"]
        params = {
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "response_mode": "query",
            "scope": f"openid profile offline_access {GRAPH_SCOPE}",
            "state": "st-2",
            "nonce": "no-2",
            "code_challenge": s256_challenge(VERIFIER),
            "code_challenge_method": "S256",
        }
        status, query, _ = await _authorize(http, authorize_url, params, ssl)
        assert status == 302 and query["state"] == "st-2"
        token_url = emu.token_endpoint
        status, body = await _token(http, token_url, _code_form(query["code"]), ssl)
        assert status == 200, body
        assert body["refresh_token"] and body["access_token"]
        claims = jwt_claims(body["id_token"])
        assert claims["preferred_username"] == MICROSOFT_USER and claims["nonce"] == "no-2"
        # Replayed: AADSTS54005.
        status, body = await _token(http, token_url, _code_form(query["code"]), ssl)
        assert status == 400 and body["error"] == "invalid_grant"
        assert body["error_codes"] == [54005]
        # Without offline_access no refresh token; a wrong verifier is AADSTS501481.
        params["scope"] = f"openid {GRAPH_SCOPE}"
        _, query, _ = await _authorize(http, authorize_url, params, ssl)
        status, body = await _token(http, token_url, _code_form(query["code"]), ssl)
        assert status == 200 and "refresh_token" not in body
        _, query, _ = await _authorize(http, authorize_url, params, ssl)
        form = _code_form(query["code"], code_verifier="w" * 50)
        status, body = await _token(http, token_url, form, ssl)
        assert status == 400 and body["error_codes"] == [501481]
        async with http.post(emu.control_url + "sign_ins", json={"deny": True}, ssl=ssl) as answer:
            assert answer.status == 204
        _, query, _ = await _authorize(http, authorize_url, params, ssl)
        assert query["error"] == "access_denied" and query["state"] == "st-2"


async def test_msal_auth_code_flow_against_the_microsoft_emulator(
    http: aiohttp.ClientSession,
) -> None:
    async with MicrosoftEmulator() as emu:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        emu.control.add_user(MICROSOFT_USER, CLIENT_ID)
        session = requests.Session()
        session.trust_env = False
        session.verify = emu.ca_pem_path
        # msal does its discovery in the constructor, blocking: off the loop.
        app = await asyncio.to_thread(
            msal.ConfidentialClientApplication,
            CLIENT_ID,
            client_credential=CLIENT_SECRET,
            authority=emu.authority,
            instance_discovery=False,
            http_client=session,
        )
        with pytest.warns(UserWarning, match="form_post"):  # msal's advice; query is ours
            flow = app.initiate_auth_code_flow([GRAPH_SCOPE], redirect_uri=REDIRECT)
        assert flow["code_verifier"]
        _, query, _ = await _authorize(http, flow["auth_uri"], {}, emu.ssl_context())
        result = await asyncio.to_thread(app.acquire_token_by_auth_code_flow, flow, query)
        session.close()
    assert "error" not in result, result.get("error")
    assert result["access_token"] and result["refresh_token"]
    assert result["id_token_claims"]["preferred_username"] == MICROSOFT_USER
