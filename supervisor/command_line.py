"""The ``integration-worker`` command line: every command, its arguments and its handler.

Invariants:
- this module imports only the standard library and dependency-free vocabularies, so ``--help``
  (and a refused argument) answers in a few milliseconds, loading no settings, no database
  driver, no actor and no sandbox module;
- a handler is named, not imported (``Handler``): ``supervisor.cli`` loads the one module of the
  command that runs, after parsing.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from outbox.model import DEFAULT_CALENDAR
from store.vocabulary import STATUSES

if TYPE_CHECKING:
    from config.settings import Settings

Command = Callable[["Settings", argparse.Namespace], Awaitable[None]]

MAX_PAGE = 1000  # the most dead letters `outbox dead-letters` prints at once

# The modules whose coroutine functions run the commands.
_PROCESS = "supervisor.process_commands"
_ACCOUNTS = "supervisor.operator_commands"
_OUTBOX = "supervisor.outbox_commands"
_DOCTOR = "supervisor.doctor"


@dataclass(frozen=True)
class Handler:
    """The coroutine function that runs a command, by module and name."""

    module: str
    name: str

    def load(self) -> Command:
        return cast(Command, getattr(importlib.import_module(self.module), self.name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="integration-worker",
        description="Keeps users' external calendars in two-way sync with PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(
        run=Handler(_PROCESS, "_migrate")
    )
    commands.add_parser("supervise", help="run one replica").set_defaults(
        run=Handler(_PROCESS, "_supervise")
    )
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
    demo.set_defaults(run=Handler(_PROCESS, "_demo"), log_format="console", log_level="ERROR")
    rotate = commands.add_parser("rotate-keys", help="re-encrypt credentials under the active key")
    rotate.add_argument("--batch-size", type=int, default=500)
    rotate.set_defaults(run=Handler(_PROCESS, "_rotate_keys"))
    gateway = commands.add_parser("gateway", help="run the stateless webhook gateway")
    gateway.add_argument("--host", default=None, help="listen address (IW_GATEWAY_HOST)")
    gateway.add_argument("--port", type=int, default=None, help="listen port (IW_GATEWAY_PORT)")
    gateway.set_defaults(run=Handler(_PROCESS, "_gateway"))
    api = commands.add_parser("api", help="run the admin HTTP API (docs/admin-api.md)")
    api.add_argument("--host", default=None, help="listen address (IW_API_HOST)")
    api.add_argument("--port", type=int, default=None, help="listen port (IW_API_PORT)")
    api.set_defaults(run=Handler(_PROCESS, "_api"))
    api_sub = api.add_subparsers(dest="api_command")
    api_sub.add_parser(
        "hash-token", help="read a bearer token on stdin, print its hash for IW_API_TOKEN_HASHES"
    ).set_defaults(run=Handler(_PROCESS, "_api_hash_token"))
    add_operator_commands(commands)
    add_outbox_commands(commands)
    add_doctor_command(commands)
    emulator = commands.add_parser("emulator", help="run a provider emulator on loopback")
    emulator.add_argument(
        "provider", choices=["google", "microsoft"], help="which provider to emulate"
    )
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.set_defaults(run=Handler(_PROCESS, "_emulator"), log_format="console")
    return parser


def add_operator_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``accounts`` (add, list, show, disable, remove) and ``events`` (export)."""
    accounts = commands.add_parser("accounts", help="add, inspect, disable or remove accounts")
    sub = accounts.add_subparsers(dest="accounts_command", required=True)

    add = sub.add_parser("add", help="connect an account (or replace its credentials)")
    add.add_argument(
        "--provider", required=True, metavar="KIND", help="the account's kind (google, microsoft)"
    )
    add.add_argument("--email", required=True, help="the account's user (external user id)")
    add.add_argument(
        "--refresh-token-file",
        required=True,
        metavar="PATH",
        help="file holding the OAuth refresh token, or - for stdin (never pass it as a flag)",
    )
    add.set_defaults(run=Handler(_ACCOUNTS, "_accounts_add"))

    listing = sub.add_parser("list", help="list accounts")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--provider", metavar="KIND", default=None, help="only this kind")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.set_defaults(run=Handler(_ACCOUNTS, "_accounts_list"))

    show = sub.add_parser("show", help="an account, its credentials' metadata, calendars")
    show.add_argument("account_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=Handler(_ACCOUNTS, "_accounts_show"))

    cals = sub.add_parser(
        "calendars", help="an account's calendars and whether each syncs; select or deselect one"
    )
    cals.add_argument("account_id", metavar="ID")
    choice = cals.add_mutually_exclusive_group()
    choice.add_argument("--select", metavar="CAL", help="sync this calendar")
    choice.add_argument("--deselect", metavar="CAL", help="stop syncing it; its events go")
    choice.add_argument("--default", metavar="CAL", help="back to the default rule")
    cals.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    cals.set_defaults(run=Handler(_ACCOUNTS, "_accounts_calendars"))

    retry = sub.add_parser(
        "retry-set-aside",
        help="a full round of each calendar with items set aside (prints the calendar ids)",
    )
    retry.add_argument("account_id", metavar="ID")
    retry.set_defaults(run=Handler(_ACCOUNTS, "_accounts_retry_set_aside"))

    disable = sub.add_parser("disable", help="stop syncing an account (status disabled)")
    disable.add_argument("account_id", metavar="ID")
    disable.set_defaults(run=Handler(_ACCOUNTS, "_accounts_disable"))

    remove = sub.add_parser("remove", help="purge an account and all its data")
    remove.add_argument("account_id", metavar="ID")
    remove.add_argument("--yes", action="store_true", help="confirm the purge")
    remove.set_defaults(run=Handler(_ACCOUNTS, "_accounts_remove"))

    events = commands.add_parser("events", help="stored events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    export = events_sub.add_parser("export", help="an account's events as JSON lines")
    export.add_argument("--account", required=True, metavar="ID")
    export.set_defaults(run=Handler(_ACCOUNTS, "_events_export"))


def add_outbox_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``outbox`` (enqueue, status, dead-letters, replay)."""
    outbox = commands.add_parser("outbox", help="ask for writes, inspect and replay the outbox")
    sub = outbox.add_subparsers(dest="outbox_command", required=True)

    add = sub.add_parser(
        "enqueue",
        help="queue an upsert (default), a --cancel or a --rebuild; prints the item id",
        description="Timed upserts take --start/--end (ISO 8601 with an offset); all-day ones"
        " --all-day --start-date/--end-date (end exclusive).",
    )
    mode = add.add_mutually_exclusive_group()
    mode.add_argument("--cancel", action="store_true", help="CANCEL_EVENT: delete the event")
    mode.add_argument(
        "--rebuild", action="store_true", help="REBUILD_ALL of --workspace in --calendar"
    )
    add.add_argument("--account", required=True, metavar="ID")
    add.add_argument("--workspace", required=True)
    add.add_argument("--calendar", default=DEFAULT_CALENDAR, help="default: primary")
    add.add_argument("--source-type", default=None)
    add.add_argument("--source-id", default=None)
    add.add_argument("--event-type", default=None, help="e.g. BLOCKER_DEADLINE")
    add.add_argument("--version", type=int, default=None, help="per source; lower is stale")
    add.add_argument("--title", default=None)
    add.add_argument("--description", default=None)
    add.add_argument("--start", default=None, metavar="DATETIME")
    add.add_argument("--end", default=None, metavar="DATETIME")
    add.add_argument("--time-zone", default=None, help="IANA zone the event was planned in")
    add.add_argument("--all-day", action="store_true")
    add.add_argument("--start-date", default=None, metavar="DATE")
    add.add_argument("--end-date", default=None, metavar="DATE", help="exclusive")
    add.set_defaults(run=Handler(_OUTBOX, "_enqueue"))

    status = sub.add_parser("status", help="items by state and the oldest pending one's age")
    status.add_argument("--account", default=None, metavar="ID")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(run=Handler(_OUTBOX, "_status"))

    letters = sub.add_parser("dead-letters", help="items given up on, with their last error")
    letters.add_argument("--account", default=None, metavar="ID")
    letters.add_argument("--limit", type=int, default=50, help=f"page size (1..{MAX_PAGE})")
    letters.add_argument("--after", type=int, default=None, metavar="ID", help="next page")
    letters.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    letters.set_defaults(run=Handler(_OUTBOX, "_dead_letters"))

    replay = sub.add_parser("replay", help="put dead letters back to pending, due now")
    replay.add_argument("ids", nargs="*", type=int, metavar="ID")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    replay.add_argument("--account", default=None, metavar="ID", help="with --all: one account")
    replay.set_defaults(run=Handler(_OUTBOX, "_replay"))


def add_doctor_command(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``doctor [--json] [--repair]``."""
    doctor = commands.add_parser(
        "doctor", help="audit active accounts: live channels and recent syncs (exit 1: findings)"
    )
    doctor.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    doctor.add_argument(
        "--repair", action="store_true", help="ask the owning actors to resync / renew"
    )
    doctor.set_defaults(run=Handler(_DOCTOR, "_doctor"))
