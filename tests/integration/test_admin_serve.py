"""The ``integration-worker api`` process's application: the API behind bearer tokens, probes and
the OAuth connect flow beside it without one. Real Postgres, Redis and provider emulators."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from config.settings import Settings
from connect.start_token import mint_start
from providers.http import HttpSettings, create_session
from sandbox.emulators.google.server import GoogleEmulator
from store.accounts import find_account
from store.crypto import Keyring
from store.db import PgPool
from supervisor.api_process import create_server_app
from tests.support.admin_server import TOKEN, admin_settings

CLIENT_ID, CLIENT_SECRET = "iw-admin-serve", "admin-serve-secret"
USER = "grace@example.com"


@asynccontextmanager
async def serving(
    pool: PgPool, redis: Redis, keyring: Keyring, settings: Settings, sock: socket.socket
) -> AsyncIterator[str]:
    """The process's app on ``sock`` until the block ends; yields its base URL."""
    async with create_session(HttpSettings()) as session:
        app = create_server_app(pool, redis, settings, keyring, session)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            host, port = sock.getsockname()[:2]
            yield f"http://{host}:{port}"
        finally:
            await runner.cleanup()


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _get(url: str, **kwargs: Any) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(url, allow_redirects=False, **kwargs) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, response.headers


async def test_probes_are_open_and_the_api_needs_its_token(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    async with serving(pool, redis, keyring, admin_settings(), _socket()) as base:
        assert (await _get(f"{base}/healthz"))[:2] == (200, {"status": "ok"})
        status, body, _ = await _get(f"{base}/readyz")
        assert status == 200 and body["checks"] == {"postgres": "ok", "redis": "ok"}
        assert (await _get(f"{base}/api/v1/accounts"))[0] == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await _get(f"{base}/api/v1/accounts", headers=bearer))[0] == 200
        # The flow is off by default: its paths are plain unknown routes, not a 401.
        status, body, _ = await _get(f"{base}/oauth/google/start")
        assert status == 404 and body["error"]["code"] == "not_found"


async def test_readiness_names_an_unreachable_redis(pool: PgPool, keyring: Keyring) -> None:
    closed = _socket()  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    unreachable = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        async with serving(pool, unreachable, keyring, admin_settings(), _socket()) as base:
            status, body, _ = await _get(f"{base}/readyz")
    finally:
        await unreachable.aclose()
        closed.close()
    assert status == 503 and body["failed"] == ["redis"]


async def test_a_user_connects_through_the_oauth_flow_without_a_token(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    sock = _socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with GoogleEmulator() as google:
        google.control.add_client(CLIENT_ID, CLIENT_SECRET)
        google.control.add_user(USER, CLIENT_ID)
        settings = admin_settings(
            oauth_connect_enabled=True,
            oauth_redirect_base_url=base,
            oauth_state_secret="s" * 40,
            oauth_start_secret="t" * 40,
            google_client_id=CLIENT_ID,
            google_client_secret=CLIENT_SECRET,
            google_auth_uri=google.auth_uri,
            google_token_uri=google.token_uri,
        )
        async with (
            serving(pool, redis, keyring, settings, sock),
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
        ):
            # The host application mints the start token with the shared secret.
            token = mint_start(
                b"t" * 40,
                provider="google",
                user_ref="host-user",
                return_state="",
                now=time.time(),
                ttl_s=60,
            )
            url = f"{base}/oauth/google/start?token={token}"
            for _ in range(3):  # start -> the provider's consent -> our callback
                async with browser.get(url, allow_redirects=False) as response:
                    if response.status != 302:
                        break
                    url = response.headers["Location"]
            assert response.status == 200, await response.text()
    account = await find_account(pool, "google", USER)
    assert account is not None and account.status == "active"
