"""The OAuth connect flow end to end: our routes on a real aiohttp server, the real Google and
Microsoft emulators as the providers, real Postgres; a cookie-keeping client follows the
redirect chain (start -> provider's authorization endpoint -> callback) by hand."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from config.redact import redact_text
from config.redact import registry_size as redaction_registry_size
from config.settings import Settings, load_settings
from connect import create_connect_app
from connect.start_token import StartRefused, mint_start, open_result
from operations.accounts import add_account
from providers.google.auth import GoogleTokenRefresher
from providers.http import HttpSettings, create_session
from providers.microsoft.auth import MicrosoftTokenRefresher
from sandbox.emulators.google.server import GoogleEmulator
from sandbox.emulators.microsoft.server import MicrosoftEmulator
from store.accounts import find_account, list_accounts, set_status
from store.credentials import load_credentials
from store.crypto import Keyring
from store.db import PgPool
from store.vocabulary import Provider

CLIENT_ID, CLIENT_SECRET = "connect-client", "connect-client-secret"
GOOGLE_USER, MICROSOFT_USER = "ada@example.com", "grace@contoso.example"
GRAPH_SCOPE = "https://graph.microsoft.com/Calendars.ReadWrite"
STATE_SECRET = "state-secret-" + "x" * 32
START_SECRET = "start-secret-" + "y" * 32  # shared with the host application


@dataclass
class Rig:
    """Our flow on a real server, one emulator per provider, and a browser."""

    base_url: str
    google: GoogleEmulator
    microsoft: MicrosoftEmulator
    settings: Settings
    browser: aiohttp.ClientSession
    ssl: Any

    def new_browser(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(
        self, url: str, browser: aiohttp.ClientSession | None = None
    ) -> tuple[int, str, Any]:
        """One GET without following redirects: status, Location, JSON body (or None)."""
        async with (browser or self.browser).get(
            url, allow_redirects=False, ssl=self.ssl
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, response.headers.get("Location", ""), body

    def start_url(self, provider: str, *, base_url: str | None = None, **changes: Any) -> str:
        """The start URL with a start token the host minted for ``provider``."""
        token = mint_start(
            START_SECRET.encode(),
            provider=changes.get("token_provider", provider),
            user_ref=changes.get("user_ref", "host-user-7"),
            return_state="back-to-settings",
            now=changes.get("now", time.time()),
            ttl_s=changes.get("ttl_s", 300),
        )
        return f"{base_url or self.base_url}/oauth/{provider}/start?token={token}"

    async def authorize(self, provider: str, browser: aiohttp.ClientSession | None = None) -> str:
        """Start a flow and let the provider approve it: the callback URL it redirects to."""
        status, location, _ = await self.get(self.start_url(provider), browser)
        assert status == 302, status
        status, callback, _ = await self.get(location, browser)
        assert status == 302, status
        assert callback.startswith(f"{self.base_url}/oauth/{provider}/callback?")
        return callback


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _settings(
    base_url: str, google: GoogleEmulator, microsoft: MicrosoftEmulator, **extra: Any
) -> Settings:
    options: dict[str, Any] = {
        "oauth_connect_enabled": True,
        "oauth_redirect_base_url": base_url,
        "oauth_state_secret": STATE_SECRET,
        "oauth_start_secret": START_SECRET,
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_auth_uri": google.auth_uri,
        "google_token_uri": google.token_uri,
        "microsoft_client_id": CLIENT_ID,
        "microsoft_client_secret": CLIENT_SECRET,
        "microsoft_authority": microsoft.authority,
        "microsoft_scopes": [GRAPH_SCOPE],
        "ca_bundle": Path(microsoft.ca_pem_path),
        "shard_count": 8,
    }
    options.update(extra)
    return load_settings(**options)


@pytest.fixture
async def rig(pool: PgPool, keyring: Keyring, json_logs: io.StringIO) -> AsyncIterator[Rig]:
    async with AsyncExitStack() as stack:
        google = await stack.enter_async_context(GoogleEmulator())
        microsoft = await stack.enter_async_context(MicrosoftEmulator())
        for control in (google.control, microsoft.control):
            control.add_client(CLIENT_ID, CLIENT_SECRET)
        google.control.add_user(GOOGLE_USER, CLIENT_ID)
        microsoft.control.add_user(MICROSOFT_USER, CLIENT_ID)
        sock = _free_socket()
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = _settings(base_url, google, microsoft)
        session = create_session(HttpSettings(ca_bundle=settings.ca_bundle))
        stack.push_async_callback(session.close)
        # The default access log stays on: it must not leak the callback's code either.
        runner = web.AppRunner(create_connect_app(settings, pool, keyring, session))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, sock).start()
        browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        stack.push_async_callback(browser.close)
        yield Rig(base_url, google, microsoft, settings, browser, microsoft.ssl_context())


async def _accounts(pool: PgPool) -> int:
    return len(await list_accounts(pool))


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_a_user_connects_and_the_stored_token_refreshes(
    rig: Rig, pool: PgPool, keyring: Keyring, json_logs: io.StringIO, provider: Provider
) -> None:
    callback = await rig.authorize(provider)
    status, _, body = await rig.get(callback)
    assert status == 200, body
    email = GOOGLE_USER if provider == "google" else MICROSOFT_USER
    assert body["provider"] == provider and body["email"] == email
    account = await find_account(pool, provider, email)
    assert account is not None and str(account.id) == body["account_id"]
    assert account.status == "active"
    creds = await load_credentials(pool, keyring, account.id)
    assert creds is not None
    stored = await pool.fetchval(
        "SELECT refresh_token FROM credentials WHERE account_id = $1", account.id
    )
    assert creds.refresh_token.encode() not in bytes(stored)  # encrypted at rest

    if provider == "google":
        refresher: GoogleTokenRefresher | MicrosoftTokenRefresher = GoogleTokenRefresher(
            token_uri=rig.google.token_uri, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        )
    else:
        refresher = MicrosoftTokenRefresher(
            authority=rig.microsoft.authority,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            scopes=[GRAPH_SCOPE],
            ca_bundle=Path(rig.microsoft.ca_pem_path),
        )
    try:
        grant = await refresher.refresh(creds.refresh_token)
    finally:
        await refresher.aclose()
    assert grant.access_token

    # The cookie is spent: the same callback again is refused before the provider is asked.
    status, _, body = await rig.get(callback)
    assert status == 400 and body["error"] == "invalid_state"

    logs = json_logs.getvalue()
    assert "account connected" in logs
    assert f"/oauth/{provider}/callback?" in logs  # the access log saw the callback's URL
    query = parse_qs(urlsplit(callback).query)
    code, state = query["code"][0], query["state"][0]
    secrets = (code, state, creds.refresh_token, grant.access_token, CLIENT_SECRET, STATE_SECRET)
    for secret in secrets:
        assert secret not in logs


async def test_reconnecting_reactivates_the_account_with_new_credentials(
    rig: Rig, pool: PgPool, keyring: Keyring
) -> None:
    status, _, first = await rig.get(await rig.authorize("microsoft"))
    assert status == 200
    account = await find_account(pool, "microsoft", MICROSOFT_USER)
    assert account is not None
    old = await load_credentials(pool, keyring, account.id)
    await set_status(pool, account.id, "needs_reauth", last_error="invalid_grant")
    status, _, second = await rig.get(await rig.authorize("microsoft"))
    assert status == 200 and second["account_id"] == first["account_id"]
    again = await find_account(pool, "microsoft", MICROSOFT_USER)
    new = await load_credentials(pool, keyring, account.id)
    assert again is not None and again.status == "active"
    assert old is not None and new is not None and new.refresh_token != old.refresh_token
    assert await _accounts(pool) == 1


async def test_an_unverified_callback_writes_nothing_into_the_log_redaction(
    rig: Rig, pool: PgPool
) -> None:
    # Before: every callback's code (and every flow's state) went into the process-wide
    # registry of secrets, so a stranger could blank any word from every later log line, evict
    # the configured secrets, or make each line cost a regex of odd values.
    before = redaction_registry_size()
    for code in ("timestamp", "provider", "p@ss!word#with(punct)" * 4):
        status, _, body = await rig.get(f"{rig.base_url}/oauth/google/callback?code={code}&state=s")
        assert status == 400 and body["error"] == "invalid_state"
    assert redaction_registry_size() == before
    assert redact_text("timestamp provider event") == "timestamp provider event"
    assert await _accounts(pool) == 0


async def test_a_changed_state_is_refused(rig: Rig, pool: PgPool) -> None:
    callback = await rig.authorize("google")
    status, _, body = await rig.get(callback.replace("state=", "state=x"))
    assert status == 400 and body["error"] == "invalid_state"
    assert "state parameter" in body["detail"]
    assert await _accounts(pool) == 0


async def test_a_callback_without_the_flow_cookie_is_refused(rig: Rig, pool: PgPool) -> None:
    callback = await rig.authorize("microsoft")
    async with rig.new_browser() as stranger:
        status, _, body = await rig.get(callback, stranger)
    assert status == 400 and body["error"] == "invalid_state"
    assert "no OAuth flow" in body["detail"]
    assert await _accounts(pool) == 0


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_a_replayed_code_is_refused_by_the_provider(
    rig: Rig, pool: PgPool, keyring: Keyring, provider: Provider
) -> None:
    first = await rig.authorize(provider)
    status, _, body = await rig.get(first)
    assert status == 200
    account = await find_account(pool, provider, body["email"])
    assert account is not None
    before = await load_credentials(pool, keyring, account.id)
    # A new flow in the same browser, with the old code pasted into its callback.
    fresh = urlsplit(await rig.authorize(provider))
    old_code = parse_qs(urlsplit(first).query)["code"][0]
    state = parse_qs(fresh.query)["state"][0]
    replay = fresh._replace(query=f"code={old_code}&state={state}").geturl()
    status, _, body = await rig.get(replay)
    assert status == 400 and body["error"] == "code_exchange_refused"
    assert body["provider_error"] == "invalid_grant"
    after = await load_credentials(pool, keyring, account.id)
    assert before is not None and after is not None
    assert after.refresh_token == before.refresh_token
    assert await _accounts(pool) == 1


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_a_code_from_another_flow_fails_pkce(rig: Rig, pool: PgPool, provider: str) -> None:
    """An attacker's code injected into the victim's callback: state fits, the verifier not."""
    victim = urlsplit(await rig.authorize(provider))
    async with rig.new_browser() as attacker:
        injected = await rig.authorize(provider, attacker)
    code = parse_qs(urlsplit(injected).query)["code"][0]
    state = parse_qs(victim.query)["state"][0]
    status, _, body = await rig.get(victim._replace(query=f"code={code}&state={state}").geturl())
    assert status == 400 and body["error"] == "code_exchange_refused"
    assert body["provider_error"] == "invalid_grant"
    assert await _accounts(pool) == 0


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_a_user_who_declines_creates_nothing(rig: Rig, pool: PgPool, provider: str) -> None:
    if provider == "google":
        rig.google.control.queue_sign_in(deny=True)
    else:
        rig.microsoft.control.queue_sign_in(deny=True)
    callback = await rig.authorize(provider)
    assert "error=access_denied" in callback and "code=" not in callback
    status, _, body = await rig.get(callback)
    assert status == 400 and body["error"] == "authorization_failed"
    assert body["provider_error"] == "access_denied"
    assert await _accounts(pool) == 0


async def test_the_queued_user_is_the_one_signed_in(rig: Rig, pool: PgPool) -> None:
    rig.google.control.add_user("bob@example.com", CLIENT_ID)
    rig.google.control.queue_sign_in("bob@example.com")
    status, _, body = await rig.get(await rig.authorize("google"))
    assert status == 200 and body["email"] == "bob@example.com"


@asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = _free_socket()
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


async def test_success_can_redirect_the_browser(rig: Rig, pool: PgPool, keyring: Keyring) -> None:
    settings = rig.settings.model_copy(
        update={"oauth_success_redirect_url": "https://app.example/connected?from=iw"}
    )
    async with (
        create_session() as session,
        _serve(create_connect_app(settings, pool, keyring, session)) as url,
    ):
        # The public URL stays the rig's (the provider redirects there): replay the callback
        # on this server by path.
        status, location, _ = await rig.get(rig.start_url("google", base_url=url))
        assert status == 302
        _, callback, _ = await rig.get(location)
        status, target, _ = await rig.get(url + callback.removeprefix(rig.base_url))
    assert status == 302
    assert target.startswith("https://app.example/connected?from=iw&result=")
    # The host gets a result it can check: signed by the shared secret, for its user and its
    # return_state, and never a bare account id.
    result = parse_qs(urlsplit(target).query)["result"][0]
    claims = open_result(START_SECRET.encode(), result, now=time.time())
    (account,) = await list_accounts(pool)
    assert (claims.account_id, claims.user_ref) == (str(account.id), "host-user-7")
    assert claims.return_state == "back-to-settings" and "account_id" not in target
    with pytest.raises(StartRefused):
        open_result(b"another secret" * 3, result, now=time.time())


async def test_only_the_hosts_start_token_starts_a_flow(rig: Rig, pool: PgPool) -> None:
    # Before: /oauth/{provider}/start was public, so anyone could create accounts.
    base = f"{rig.base_url}/oauth/google/start"
    forged = mint_start(
        b"not the shared secret at all....",
        provider="google",
        user_ref="x",
        return_state="",
        now=time.time(),
        ttl_s=60,
    )
    refusals = {
        base: "required",
        f"{base}?token=garbage": "malformed",
        f"{base}?token={forged}": "not signed",
        rig.start_url("google", token_provider="microsoft"): "another provider",
    }
    for url, detail in refusals.items():
        status, location, body = await rig.get(url)
        assert status == 403 and body["error"] == "start_refused" and detail in body["detail"]
        assert location == ""
    expired = mint_start(
        START_SECRET.encode(),
        provider="google",
        user_ref="x",
        return_state="",
        now=time.time() - 600,
        ttl_s=60,
    )
    status, _, body = await rig.get(f"{base}?token={expired}")
    assert status == 403 and "expired" in body["detail"]
    # Single use: the second start with one token is refused.
    once = rig.start_url("google")
    assert (await rig.get(once))[0] == 302
    status, _, body = await rig.get(once)
    assert status == 403 and "used already" in body["detail"]
    assert await _accounts(pool) == 0


async def test_the_routes_answer_404_when_disabled(
    rig: Rig, pool: PgPool, keyring: Keyring
) -> None:
    settings = rig.settings.model_copy(update={"oauth_connect_enabled": False})
    async with (
        create_session() as session,
        _serve(create_connect_app(settings, pool, keyring, session)) as url,
    ):
        for path in ("/oauth/google/start", "/oauth/microsoft/callback?code=c&state=s"):
            status, _, _ = await rig.get(url + path)
            assert status == 404
    # On an enabled server, a provider without a client is 404 too.
    status, _, body = await rig.get(f"{rig.base_url}/oauth/slack/start")
    assert status == 404 and body["error"] == "unknown_provider"


async def test_a_failing_token_endpoint_creates_nothing(rig: Rig, pool: PgPool) -> None:
    callback = await rig.authorize("google")
    rig.google.control.add_fault("backend_error", method="POST", path="/token")
    status, _, body = await rig.get(callback)
    assert status == 502 and body["error"] == "provider_unavailable"
    assert await _accounts(pool) == 0


async def test_an_expired_flow_is_refused(pool: PgPool, keyring: Keyring, rig: Rig) -> None:
    now = [1_000_000.0]
    async with (
        create_session(HttpSettings(ca_bundle=rig.settings.ca_bundle)) as session,
        _serve(
            create_connect_app(rig.settings, pool, keyring, session, clock=lambda: now[0])
        ) as url,
    ):
        status, location, _ = await rig.get(rig.start_url("google", base_url=url, now=now[0]))
        assert status == 302
        _, callback, _ = await rig.get(location)
        now[0] += rig.settings.oauth_state_max_age_s + 1
        status, _, body = await rig.get(url + callback.removeprefix(rig.base_url))
    assert status == 400 and body["error"] == "invalid_state"
    assert "too long" in body["detail"]
    assert await _accounts(pool) == 0


async def test_a_connect_never_takes_over_another_users_account(
    rig: Rig, pool: PgPool, keyring: Keyring
) -> None:
    # Before: the e-mail alone named the account, so whoever signed in with that address next
    # (a reassigned mailbox, a renamed UPN) replaced the credentials silently.
    theirs = await add_account(
        pool,
        keyring,
        provider="google",
        email=GOOGLE_USER,
        refresh_token="1//theirs",
        shard_count=8,
        subject="another-users-sub",
    )
    status, _, body = await rig.get(await rig.authorize("google"))
    assert status == 409 and body["error"] == "account_of_another_user"
    creds = await load_credentials(pool, keyring, theirs.id)
    assert creds is not None and creds.refresh_token == "1//theirs"


async def test_an_account_added_by_token_is_adopted_by_its_first_connect(
    rig: Rig, pool: PgPool, keyring: Keyring
) -> None:
    added = await add_account(
        pool,
        keyring,
        provider="microsoft",
        email=MICROSOFT_USER,
        refresh_token="1.AQ-old",
        shard_count=8,
    )
    assert added.subject is None
    status, _, body = await rig.get(await rig.authorize("microsoft"))
    assert status == 200 and body["account_id"] == str(added.id)
    bound = await find_account(pool, "microsoft", MICROSOFT_USER)
    assert bound is not None and bound.subject is not None and ":" in bound.subject  # tid:oid
    # Signing in again as the same user finds the account by its subject.
    status, _, again = await rig.get(await rig.authorize("microsoft"))
    assert status == 200 and again["account_id"] == str(added.id)
