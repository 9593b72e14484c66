"""``GoogleEmulator``: one aiohttp server on loopback serving the Calendar API, the token
endpoint and the control API; plus ``serve`` for the CLI.

Invariants: start() returns once the socket listens (so ``port=0`` resolves to the real port);
close() stops delivery tasks before the server and the push session, and is idempotent.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import TracebackType

from aiohttp import web

from sandbox.emulators.shared.clock import Clock

from . import api, control, oauth
from .backend import BACKEND, Backend
from .push import PushHub
from .store import Store


class GoogleEmulator:
    """Google Calendar v3 + OAuth token endpoint emulator; use as ``async with``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
        token_lifetime_s: float = 3600,
        require_https: bool = False,
        sync_token_max_age_s: float | None = None,
        expansion_past_days: int = 365,
        expansion_future_days: int = 730,
        push_retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4),
        sync_wait_s: float = 1.0,
    ) -> None:
        self.host, self.port = host, port
        self.clock = clock or Clock()
        store = Store(
            self.clock,
            token_lifetime=timedelta(seconds=token_lifetime_s),
            horizon=(timedelta(days=expansion_past_days), timedelta(days=expansion_future_days)),
        )
        hub = PushHub(
            self.clock,
            require_https=require_https,
            retry_delays=push_retry_delays,
            sync_wait_s=sync_wait_s,
        )
        store.listeners.append(hub.on_change)
        max_age = None if sync_token_max_age_s is None else timedelta(seconds=sync_token_max_age_s)
        self.backend = Backend(store, hub, sync_token_max_age=max_age)
        self.control = control.Control(self.backend)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def api_base_url(self) -> str:
        return self.base_url + api.PREFIX.lstrip("/")

    @property
    def token_uri(self) -> str:
        return self.base_url + "token"

    @property
    def auth_uri(self) -> str:
        return self.base_url + oauth.AUTHORIZE_PATH.lstrip("/")

    @property
    def control_url(self) -> str:
        return self.base_url + control.PREFIX.lstrip("/")

    async def start(self) -> None:
        app = web.Application(
            middlewares=[api.errors_middleware, api.faults_middleware, api.auth_middleware]
        )
        app[BACKEND] = self.backend
        app[control.CONTROL] = self.control
        api.add_routes(app)
        app.router.add_post("/token", oauth.token)
        app.router.add_get("/tokeninfo", oauth.tokeninfo)
        app.router.add_get(oauth.AUTHORIZE_PATH, oauth.authorize)
        control.add_routes(app)
        await self.backend.hub.start()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.backend.api_base_url = self.api_base_url

    async def close(self) -> None:
        # The server first, so no handler schedules a delivery after the hub closed.
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self.backend.hub.close()

    async def __aenter__(self) -> GoogleEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve(host: str, port: int) -> None:
    """Run an emulator until cancelled (``integration-worker emulator google --port N``)."""
    async with GoogleEmulator(host, port) as emulator:
        print(
            f"google emulator: api {emulator.api_base_url}  token {emulator.token_uri}"
            f"  control {emulator.control_url}",
            flush=True,
        )
        await asyncio.Event().wait()
