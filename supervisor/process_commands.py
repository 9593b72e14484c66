"""The handlers of the process commands (``migrate``, ``supervise``, ``gateway``, ``api``,
``rotate-keys``, ``demo``, ``emulator``): each opens what it needs, runs until done or
cancelled, and closes it all. ``supervisor.cli`` loads this module only to run one of them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Iterator

import anyio
import structlog

from config.redact import register_secrets
from config.settings import ConfigError, Settings
from kinds import default_registry
from operations.accounts import OperatorError
from providers.http import HttpSettings, create_session
from store.credentials import rotate_keys
from store.crypto import Keyring
from store.db import create_pool
from store.migrate import migrate
from supervisor.accounts_runtime import AccountsRuntime, providers_from_settings
from supervisor.ops_server import open_ops_server
from supervisor.replica import open_replica
from supervisor.services import open_services

log = structlog.get_logger("supervisor.cli")


@contextlib.contextmanager
def _sandbox_extra(command: str) -> Iterator[None]:
    """Imports of the sandbox (emulators, embedded servers, the demo; a checkout's package that
    the wheel leaves out) happen inside the commands that use them: a runtime-only install runs
    every other command, and these refuse clearly."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"`{command}` needs the sandbox (missing module {exc.name!r}): run it in a "
            "checkout's environment, made by `make install`"
        ) from None


async def _migrate(settings: Settings, _args: argparse.Namespace) -> None:
    async with open_services(settings) as urls:
        applied = await migrate(
            urls.database_url, settings.db_schema, kinds=default_registry().catalog()
        )
    print(f"applied migrations: {applied}" if applied else "database is up to date")


async def _supervise(settings: Settings, _args: argparse.Namespace) -> None:
    active, keys = settings.keyring_material()  # credentials cannot be read without keys
    async with (
        open_services(settings) as urls,
        open_replica(settings, urls) as replica,
        create_session(HttpSettings(ca_bundle=settings.ca_bundle)) as http,
    ):
        providers = providers_from_settings(settings, http)
        log.info("replica running", replica=settings.replica_id, providers=sorted(providers))
        runtime = AccountsRuntime(replica, providers, Keyring(active, keys))
        try:
            async with open_ops_server(settings, replica, lambda: runtime.keeper):
                await runtime.run()
        finally:
            for provider in providers.values():
                await provider.aclose()


async def _demo(settings: Settings, args: argparse.Namespace) -> None:
    with _sandbox_extra("demo"):
        from sandbox.demo import DEFAULT_EVENTS, run_demo  # noqa: PLC0415

    events = DEFAULT_EVENTS if args.events is None else args.events
    async with open_services(settings) as urls:
        await run_demo(
            settings,
            urls,
            accounts=args.accounts,
            duration_s=args.duration,
            edits_per_s=args.edits_per_s,
            fault_rate=args.fault_rate,
            out=sys.stdout,
            events_per_account=events,
            seed=args.seed,
            reauth_after_s=args.reauth_after,
        )


async def _rotate_keys(settings: Settings, args: argparse.Namespace) -> None:
    active, keys = settings.keyring_material()
    async with open_services(settings) as urls:
        pool = await create_pool(urls.database_url, settings.db_schema)
        try:
            count = await rotate_keys(pool, Keyring(active, keys), batch_size=args.batch_size)
        finally:
            await pool.close()
    print(f"re-encrypted {count} credential rows under key {active!r}")


async def _emulator(_settings: Settings, args: argparse.Namespace) -> None:
    with _sandbox_extra("emulator"):
        server = importlib.import_module(f"sandbox.emulators.{args.provider}.server")
    await server.serve(args.host, args.port)


async def _gateway(settings: Settings, args: argparse.Namespace) -> None:
    from supervisor.gateway_process import serve  # noqa: PLC0415 - only the gateway process needs it

    await serve(
        settings,
        host=settings.gateway_host if args.host is None else args.host,
        port=settings.gateway_port if args.port is None else args.port,
        max_body_bytes=settings.gateway_max_body_bytes,
    )


async def _api(settings: Settings, args: argparse.Namespace) -> None:
    # Imported here: only the admin API process needs it.
    from admin.app import require_token_hashes  # noqa: PLC0415
    from supervisor.api_process import serve  # noqa: PLC0415

    require_token_hashes(settings)  # ConfigError (exit 2) before anything opens
    active, keys = settings.keyring_material()  # connecting an account stores its token
    await serve(
        settings,
        Keyring(active, keys),
        host=settings.api_host if args.host is None else args.host,
        port=settings.api_port if args.port is None else args.port,
    )


MIN_API_TOKEN_CHARS = 32  # 32 characters of token_urlsafe carry 192 bits


async def _api_hash_token(_settings: Settings, _args: argparse.Namespace) -> None:
    from admin.auth import hash_token  # noqa: PLC0415

    token = (await anyio.to_thread.run_sync(sys.stdin.read)).strip()
    if not token:
        raise OperatorError("no token on stdin")
    if len(token) < MIN_API_TOKEN_CHARS:
        # Only its hash is kept, so the length can be checked here and nowhere later.
        raise OperatorError(
            f"an API token must be at least {MIN_API_TOKEN_CHARS} characters"
            " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    register_secrets([token], pinned=True)
    print(hash_token(token))
