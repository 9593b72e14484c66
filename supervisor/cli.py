"""The ``integration-worker`` command: migrate, supervise, demo, rotate-keys."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TextIO, cast

import anyio
import structlog

from config.logs import configure_logging
from config.redact import register_secrets
from config.settings import ConfigError, Settings, load_settings
from providers.http import HttpSettings, create_session
from store.credentials import rotate_keys
from store.crypto import Keyring
from store.db import create_pool
from store.migrate import migrate
from supervisor.accounts_runtime import AccountsRuntime, providers_from_settings
from supervisor.doctor import add_doctor_command
from supervisor.operator_commands import OperatorError, add_operator_commands
from supervisor.ops_server import open_ops_server
from supervisor.outbox_commands import add_outbox_commands
from supervisor.replica import open_replica
from supervisor.services import open_services

log = structlog.get_logger("supervisor.cli")


async def _until_signalled(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` until it returns or SIGINT/SIGTERM arrives, then unwind cleanly."""
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("stopping", signal=signal.Signals(signum).name)
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch_signals, name="signals")
        await main()
        group.cancel_scope.cancel()


async def _migrate(settings: Settings, _args: argparse.Namespace) -> None:
    async with open_services(settings) as urls:
        applied = await migrate(urls.database_url, settings.db_schema)
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
        if args.provider == "google":
            from sandbox.emulators.google.server import serve  # noqa: PLC0415
        else:
            from sandbox.emulators.microsoft.server import serve  # noqa: PLC0415
    await serve(args.host, args.port)


async def _gateway(settings: Settings, args: argparse.Namespace) -> None:
    from gateway.serve import serve  # noqa: PLC0415 - only the gateway process needs it

    await serve(
        settings,
        host=settings.gateway_host if args.host is None else args.host,
        port=settings.gateway_port if args.port is None else args.port,
        max_body_bytes=settings.gateway_max_body_bytes,
    )


async def _api(settings: Settings, args: argparse.Namespace) -> None:
    # Imported here: only the admin API process needs it.
    from admin.app import require_token_hashes  # noqa: PLC0415
    from admin.serve import serve  # noqa: PLC0415

    require_token_hashes(settings)  # ConfigError (exit 2) before anything opens
    active, keys = settings.keyring_material()  # connecting an account stores its token
    await serve(
        settings,
        Keyring(active, keys),
        host=settings.api_host if args.host is None else args.host,
        port=settings.api_port if args.port is None else args.port,
    )


async def _api_hash_token(_settings: Settings, _args: argparse.Namespace) -> None:
    from admin.auth import hash_token  # noqa: PLC0415

    token = (await anyio.to_thread.run_sync(sys.stdin.read)).strip()
    if not token:
        raise OperatorError("no token on stdin")
    register_secrets([token])
    print(hash_token(token))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="integration-worker",
        description="Keeps users' external calendars in two-way sync with PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    commands.add_parser("supervise", help="run one replica").set_defaults(run=_supervise)
    demo = commands.add_parser(
        "demo", help="emulators, gateway and a replica syncing sample accounts, live"
    )
    demo.add_argument("--accounts", type=int, default=200, help="sample accounts to connect")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many s")
    demo.add_argument("--edits-per-s", type=float, default=5.0, help="simulated user edits")
    demo.add_argument(
        "--events", type=int, default=None, help="events seeded per account (default: 200)"
    )
    demo.add_argument(
        "--fault-rate",
        type=float,
        default=0.04,
        help="injected faults per edit (429, 5xx, expired sync token, revoked token, crash);"
        " 0 disables",
    )
    demo.add_argument("--seed", type=int, default=None, help="fixes the fault schedule")
    demo.add_argument(
        "--reauth-after", type=float, default=5.0, help="s until a revoked user re-connects"
    )
    # The demo's screen is its status line: only errors (quarantines) are logged there.
    demo.set_defaults(run=_demo, log_format="console", log_level="ERROR")
    rotate = commands.add_parser("rotate-keys", help="re-encrypt credentials under the active key")
    rotate.add_argument("--batch-size", type=int, default=500)
    rotate.set_defaults(run=_rotate_keys)
    gateway = commands.add_parser("gateway", help="run the stateless webhook gateway")
    gateway.add_argument("--host", default=None, help="listen address (IW_GATEWAY_HOST)")
    gateway.add_argument("--port", type=int, default=None, help="listen port (IW_GATEWAY_PORT)")
    gateway.set_defaults(run=_gateway)
    api = commands.add_parser("api", help="run the admin HTTP API (docs/admin-api.md)")
    api.add_argument("--host", default=None, help="listen address (IW_API_HOST)")
    api.add_argument("--port", type=int, default=None, help="listen port (IW_API_PORT)")
    api.set_defaults(run=_api)
    api_sub = api.add_subparsers(dest="api_command")
    api_sub.add_parser(
        "hash-token", help="read a bearer token on stdin, print its hash for IW_API_TOKEN_HASHES"
    ).set_defaults(run=_api_hash_token)
    add_operator_commands(commands)
    add_outbox_commands(commands)
    add_doctor_command(commands)
    emulator = commands.add_parser("emulator", help="run a provider emulator on loopback")
    emulator.add_argument(
        "provider", choices=["google", "microsoft"], help="which provider to emulate"
    )
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.set_defaults(run=_emulator, log_format="console")
    return parser


class _BelowStatusLine:
    """stderr for a terminal showing the demo's status line: each log record clears it first."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write("\r\x1b[2K" + text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def _log_stream(args: argparse.Namespace) -> TextIO:
    if args.command == "demo" and sys.stdout.isatty() and sys.stderr.isatty():
        return cast(TextIO, _BelowStatusLine(sys.stderr))
    return sys.stderr


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    for name in ("log_format", "log_level"):
        if getattr(args, name, None) and f"IW_{name.upper()}" not in os.environ:
            overrides[name] = getattr(args, name)
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format, stream=_log_stream(args))
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # chatty at INFO
    register_secrets(settings.secret_values())
    exit_code = 0
    try:
        anyio.run(_until_signalled, lambda: args.run(settings, args))
    # A command's own refusal arrives wrapped by the task group; by now every service it
    # opened has been closed by the unwinding, so one line and an exit code is all that is left.
    except* ConfigError as group:
        print(group.exceptions[0], file=sys.stderr)
        exit_code = 2
    except* OperatorError as group:
        error = group.exceptions[0]
        assert isinstance(error, OperatorError)
        print(error, file=sys.stderr)
        exit_code = error.exit_code
    if exit_code:
        raise SystemExit(exit_code)


if __name__ == "__main__":
    main()
