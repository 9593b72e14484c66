"""Sync path benchmark: webhook-to-commit latency, initial-sync ingest rate, notification bursts.

- ``webhook_commit_p50_ms`` / ``_p99_ms``: people edit calendars in the Google emulator at
  ``--edits-per-s`` across ``--accounts`` accounts for ``--duration-s``; each edit's lag is from
  just before the emulator applied it to the commit of its ``changes`` row, through the real
  push pipeline (``bench.sync_latency``). The emulator adds no latency.
- ``ingest_events_per_s`` against ``copy_events_per_s``: one account's ``--ingest-events``
  already-fetched events written page by page through our write path, against one plain COPY of
  the same rows (``bench.sync_ingest``); ``ingest_ratio`` is ours / COPY.
- ``coalesce_list_calls``: ``--notifications`` edits of one calendar back to back (so as many
  notifications within a second) and the events.list calls they cost, counted at the emulator;
  ``coalesce_committed``: the last edit reached Postgres.

Invariants: every figure is measured in this run against a fresh database (created here and
dropped at the end) on the configured servers (``IW_DATABASE_URL`` and ``IW_REDIS_URL``), or on
embedded ones started here (with ``track_commit_timestamp`` on, for exact commit times); stdout
carries only the result (one JSON line with ``--json``), logs go to stderr. No figure is
asserted anywhere.

    python -m bench.sync            # human-readable table
    python -m bench.sync --json     # one JSON object of figures
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import orjson

from bench.report import render
from bench.sync_ingest import INGEST_PAGE_SIZE, IngestFigures, measure_ingest
from bench.sync_latency import PushFigures, measure_push
from config.logs import configure_logging
from store.db import DEFAULT_SCHEMA, create_pool, dsn_with_database, quote_ident
from store.migrate import migrate
from supervisor.services import ServiceUrls


@contextlib.asynccontextmanager
async def _servers() -> AsyncIterator[tuple[str, str, bool]]:
    """(admin DSN, Redis URL, commit timestamps on): configured servers, else embedded ones."""
    database_url, redis_url = os.environ.get("IW_DATABASE_URL"), os.environ.get("IW_REDIS_URL")
    if database_url and redis_url:
        conn = await asyncpg.connect(database_url)
        try:
            tracked = await conn.fetchval("SHOW track_commit_timestamp") == "on"
        finally:
            await conn.close()
        yield database_url, redis_url, tracked
        return
    from sandbox.embedded import embedded_services  # noqa: PLC0415 - optional extra

    with contextlib.ExitStack() as stack:
        services = await anyio.to_thread.run_sync(stack.enter_context, embedded_services())
        postgres = services.postgres
        assert postgres is not None
        conn = await asyncpg.connect(postgres.dsn)
        try:
            await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        finally:
            await conn.close()
        # The setting needs a restart; the data is throwaway and the socket path stays.
        await anyio.to_thread.run_sync(postgres.stop)
        await anyio.to_thread.run_sync(postgres.start)
        try:
            yield postgres.dsn, services.redis_url, True
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stack.close)


@contextlib.asynccontextmanager
async def _fresh_database(admin_dsn: str, purpose: str) -> AsyncIterator[str]:
    """A new, migrated database for one measurement; dropped afterwards."""
    name = f"iw_bench_{purpose}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()
    dsn = dsn_with_database(admin_dsn, name)
    try:
        await migrate(dsn, DEFAULT_SCHEMA)
        yield dsn
    finally:
        with anyio.CancelScope(shield=True):
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            finally:
                await conn.close()


async def _checkpoint(admin_dsn: str) -> None:
    """Flush what the ingest phase wrote, so its checkpoint does not land in the next phase."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _run(args: argparse.Namespace) -> tuple[IngestFigures, PushFigures]:
    async with _servers() as (admin_dsn, redis_url, tracked):
        async with _fresh_database(admin_dsn, "ingest") as dsn:
            pool = await create_pool(dsn, DEFAULT_SCHEMA, min_size=1, max_size=2)
            try:
                ingest = await measure_ingest(
                    pool,
                    events=args.ingest_events,
                    page_size=args.ingest_page_size,
                    repeat=args.ingest_repeat,
                )
            finally:
                await pool.close()
        await _checkpoint(admin_dsn)
        async with _fresh_database(admin_dsn, "push") as dsn:
            push = await measure_push(
                ServiceUrls(dsn, redis_url, embedded=False),
                accounts=args.accounts,
                edits_per_s=args.edits_per_s,
                duration_s=args.duration_s,
                notifications=args.notifications,
                child_process=args.emulator == "process",
                commit_timestamps=tracked,
            )
    return ingest, push


def figures_of(
    args: argparse.Namespace, ingest: IngestFigures, push: PushFigures
) -> dict[str, Any]:
    """The JSON object of figures."""
    return {
        "webhook_commit_p50_ms": round(push.p50_ms, 1),
        "webhook_commit_p99_ms": round(push.p99_ms, 1),
        "webhook_commit_max_ms": round(push.max_ms, 1),
        "webhook_accounts": push.accounts,
        "webhook_edits_per_s": args.edits_per_s,
        "webhook_duration_s": args.duration_s,
        "webhook_edits": push.edits,
        "webhook_samples": push.samples,
        "webhook_unmatched": push.unmatched,
        "webhook_notifications": push.notifications,
        "commit_clock": push.commit_clock,
        "emulator": args.emulator,
        "warmup_s": round(push.warmup_s, 1),
        "ingest_events": ingest.events,
        "ingest_page_size": ingest.page_size,
        "ingest_pages": ingest.pages,
        "ingest_events_per_s": round(ingest.ingest_per_s),
        "copy_events_per_s": round(ingest.copy_per_s),
        "ingest_ratio": round(ingest.ingest_per_s / ingest.copy_per_s, 2),
        "coalesce_notifications": push.coalesce_notifications,
        "coalesce_list_calls": push.coalesce_list_calls,
        "coalesce_committed": push.coalesce_committed,
    }


def table(figures: dict[str, Any]) -> str:
    """The headline figures against their baselines and targets, then every figure."""
    rows = [
        ("figure", "ours", "baseline", "ratio", "target"),
        (
            "webhook -> commit p50 / p99",
            f"{figures['webhook_commit_p50_ms']} / {figures['webhook_commit_p99_ms']} ms",
            "-",
            "-",
            "p99 < 100 ms",
        ),
        (
            "initial-sync ingest",
            f"{figures['ingest_events_per_s']:,} events/s",
            f"{figures['copy_events_per_s']:,} events/s (COPY)",
            str(figures["ingest_ratio"]),
            ">= 0.50",
        ),
        (
            f"list calls for {figures['coalesce_notifications']} notifications",
            str(figures["coalesce_list_calls"]),
            "-",
            "-",
            "1..2, committed",
        ),
    ]
    return render(rows, figures)


def main(argv: list[str] | None = None) -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1_000, help="Google accounts syncing")
    parser.add_argument("--edits-per-s", type=float, default=200.0, help="people's edit rate")
    parser.add_argument("--duration-s", type=float, default=12.0, help="how long people edit")
    parser.add_argument("--notifications", type=int, default=100, help="burst on one calendar")
    parser.add_argument("--ingest-events", type=int, default=50_000)
    parser.add_argument("--ingest-page-size", type=int, default=INGEST_PAGE_SIZE)
    parser.add_argument("--ingest-repeat", type=int, default=2, help="runs each; best is kept")
    parser.add_argument(
        "--emulator",
        choices=["process", "inline"],
        default="process",
        help="run the Google emulator in a child process (default) or in the replica's loop",
    )
    parser.add_argument("--log-level", default="WARNING", help="stderr log level")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.edits_per_s <= 0 or args.duration_s <= 0:
        parser.error("--accounts, --edits-per-s and --duration-s must be positive")
    if args.notifications < 1 or args.ingest_events < 1:
        parser.error("--notifications and --ingest-events must be positive")
    configure_logging(args.log_level, "console", stream=sys.stderr)
    ingest, push = asyncio.run(_run(args))
    figures = figures_of(args, ingest, push)
    if args.json:
        print(orjson.dumps(figures).decode())
        return
    print(table(figures))


if __name__ == "__main__":
    main()
