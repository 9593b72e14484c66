"""``MicrosoftEmulator``: one aiohttp HTTPS server on loopback serving the identity platform
(discovery, JWKS, token endpoint), Microsoft Graph v1.0 and beta, and the control API; plus
``serve`` for the CLI.

Invariants: start() returns once the socket listens (so ``port=0`` resolves to the real port)
and the CA PEM is on disk; close() stops the server before the notification hub (so no handler
schedules a delivery after the hub closed), removes the temp files, and is idempotent.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from aiohttp import web

from sandbox.emulators.shared.clock import Clock

from . import api, control, oauth
from .backend import BACKEND, Backend
from .certs import make_bundle, signing_key
from .delta import DeltaEngine
from .identity import DEFAULT_TENANT, Directory
from .store import Store
from .subscriptions import SubscriptionHub
from .tokens import JwtSigner


class MicrosoftEmulator:
    """Entra ID token endpoint + Microsoft Graph (Outlook calendar) emulator over HTTPS."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
        tenant_id: str = DEFAULT_TENANT,
        access_token_lifetime_s: float = 3600,
        refresh_token_lifetime_s: float = 90 * 86400,
        rotate_invalidates_old_refresh_token: bool = False,
        require_https: bool = False,
        delta_generations_kept: int = 3,
        default_page_size: int = 10,
        location_on_410: bool = True,
        notification_coalesce_s: float = 0.05,
        notification_retry_delays: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8),
        notification_ack_timeout_s: float = 3.0,
        validation_timeout_s: float = 10.0,
        subscription_max_minutes: int = 10080,
    ) -> None:
        self.host, self.port = host, port
        self.clock = clock or Clock()
        self.tenant_id = tenant_id
        directory = Directory(
            self.clock,
            JwtSigner(signing_key(), "emulator-key-1"),
            access_lifetime=timedelta(seconds=access_token_lifetime_s),
            refresh_lifetime=timedelta(seconds=refresh_token_lifetime_s),
            rotate_invalidates=rotate_invalidates_old_refresh_token,
        )
        store = Store(self.clock)
        hub = SubscriptionHub(
            self.clock,
            require_https=require_https,
            max_lifetime=timedelta(minutes=subscription_max_minutes),
            coalesce_s=notification_coalesce_s,
            validation_timeout_s=validation_timeout_s,
            ack_timeout_s=notification_ack_timeout_s,
            retry_delays=notification_retry_delays,
        )
        store.listeners.append(hub.on_change)
        self.backend = Backend(
            self.clock,
            directory,
            store,
            DeltaEngine(store, keep=delta_generations_kept),
            hub,
            default_page_size=default_page_size,
            location_on_410=location_on_410,
            tenant_id=tenant_id,
        )
        self.control = control.Control(self.backend)
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_pem_path = ""

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}/"

    @property
    def authority(self) -> str:
        return f"{self.base_url}{self.tenant_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def graph_base_url(self) -> str:
        return f"{self.base_url}v1.0/"

    @property
    def graph_beta_base_url(self) -> str:
        return f"{self.base_url}beta/"

    @property
    def control_url(self) -> str:
        return self.base_url + control.PREFIX.lstrip("/")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this emulator's CA (for aiohttp callers)."""
        return ssl.create_default_context(cafile=self.ca_pem_path)

    async def start(self) -> None:
        bundle = make_bundle()
        self._tmp = tempfile.TemporaryDirectory(prefix="ms-emulator-")
        folder = Path(self._tmp.name)
        (folder / "ca.pem").write_bytes(bundle.ca_pem)
        (folder / "server.pem").write_bytes(bundle.cert_pem)
        (folder / "server.key").write_bytes(bundle.key_pem)
        self.ca_pem_path = str(folder / "ca.pem")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(folder / "server.pem", folder / "server.key")
        app = web.Application(
            middlewares=[api.errors_middleware, api.faults_middleware, api.auth_middleware]
        )
        app[BACKEND] = self.backend
        app[control.CONTROL] = self.control
        control.add_routes(app)
        api.add_routes(app)
        oauth.add_routes(app)
        await self.backend.hub.start()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=server_ctx)
        await site.start()
        self.port = self._runner.addresses[0][1]
        origin = self.base_url.rstrip("/")
        self.backend.origin = origin
        self.backend.directory.issuer_base = origin + "/"
        self.backend.hub.graph_base = self.graph_base_url

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self.backend.hub.close()
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            tmp.cleanup()

    async def __aenter__(self) -> MicrosoftEmulator:
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
    """Run an emulator until cancelled (``integration-worker emulator microsoft --port N``)."""
    async with MicrosoftEmulator(host, port) as emulator:
        print(
            f"microsoft emulator: authority {emulator.authority}  graph {emulator.graph_base_url}"
            f"  ca {emulator.ca_pem_path}  control {emulator.control_url}",
            flush=True,
        )
        await asyncio.Event().wait()
