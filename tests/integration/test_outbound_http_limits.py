"""Our outbound HTTP never follows a redirect and never reads an unbounded answer: the provider
API client, both token refreshers (google-auth and msal over requests) and the connect flow's
code exchange, each against real loopback servers that redirect to a thief or answer with a
body past the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import requests
from aiohttp import web

from connect.exchange import ExchangeFailed, exchange_code
from providers.errors import ProviderError, Transient
from providers.google.auth import GoogleTokenRefresher
from providers.http import MAX_ANSWER_BYTES, MAX_TOKEN_ANSWER_BYTES, create_session, send
from providers.microsoft.auth import _Answer, _RefusedAnswer, _ThreadSessions


class Servers:
    """A thief recording whatever reaches it, and an endpoint that sends callers to it (307,
    which re-posts the body), or answers with ``size`` bytes."""

    def __init__(self) -> None:
        self.stolen: list[bytes] = []
        self.thief_url = ""
        self.base_url = ""

    async def steal(self, request: web.Request) -> web.Response:
        self.stolen.append(await request.read())
        return web.json_response({"access_token": "stolen", "expires_in": 3600})

    async def redirect(self, _request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(self.thief_url)

    async def huge(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it early
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(size // len(chunk) + 1):
            await response.write(chunk)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    found = Servers()
    thief, endpoint = web.Application(), web.Application()
    thief.router.add_route("*", "/{tail:.*}", found.steal)
    endpoint.router.add_route("*", "/redirect", found.redirect)
    endpoint.router.add_route("*", "/huge", found.huge)
    async with serve(thief) as thief_url, serve(endpoint) as base_url:
        found.thief_url, found.base_url = thief_url + "/token", base_url
        yield found


async def test_the_api_client_returns_a_redirect_and_refuses_a_huge_answer(
    servers: Servers,
) -> None:
    async with create_session() as session:
        answer = await send(
            session,
            "POST",
            servers.base_url + "/redirect",
            provider="google",
            form={"client_secret": "s3cret-value"},
        )
        assert answer.status == 307  # returned as it is, for the provider's mapping
        with pytest.raises(Transient, match="answer larger than"):
            await send(
                session, "GET", f"{servers.base_url}/huge?size={MAX_ANSWER_BYTES}", provider="g"
            )
    assert servers.stolen == []


async def test_the_google_refresher_never_posts_the_secret_elsewhere(servers: Servers) -> None:
    refresher = GoogleTokenRefresher(
        token_uri=servers.base_url + "/redirect", client_id="cid", client_secret="s3cret-value"
    )
    try:
        with pytest.raises(ProviderError):
            await refresher.refresh("1//refresh-token-value")
        huge = GoogleTokenRefresher(
            token_uri=f"{servers.base_url}/huge?size={MAX_TOKEN_ANSWER_BYTES}",
            client_id="cid",
            client_secret="s3cret-value",
        )
        try:
            with pytest.raises(Transient):
                await huge.refresh("1//refresh-token-value")
        finally:
            await huge.aclose()
    finally:
        await refresher.aclose()
    assert servers.stolen == []


async def test_the_msal_transport_never_follows_and_caps_the_answer(servers: Servers) -> None:
    sessions = _ThreadSessions(True, 5.0, _Answer())  # blocking: run in a thread, as msal is
    redirect, huge = servers.base_url + "/redirect", f"{servers.base_url}/huge"
    try:
        with pytest.raises(_RefusedAnswer):  # the 307's body is no token answer
            await asyncio.to_thread(sessions.post, redirect, data={"client_secret": "s3cret"})
        with pytest.raises(requests.ConnectionError):
            await asyncio.to_thread(sessions.get, f"{huge}?size={MAX_TOKEN_ANSWER_BYTES}")
    finally:
        sessions.close()
    assert servers.stolen == []


async def test_the_code_exchange_never_follows_a_redirect(servers: Servers) -> None:
    async with create_session() as session:
        with pytest.raises(ExchangeFailed):
            await exchange_code(
                session, servers.base_url + "/redirect", {"client_secret": "s3cret-value"}
            )
        with pytest.raises(ExchangeFailed):
            await exchange_code(
                session, f"{servers.base_url}/huge?size={MAX_TOKEN_ANSWER_BYTES}", {}
            )
    assert servers.stolen == []
