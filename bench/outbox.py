"""Outbox benchmark: insert-to-provider-write latency, and sustained writes per second.

- ``outbox_write_p50_ms`` / ``_p99_ms`` / ``_max_ms``: an application (a child process) inserts
  ``outbox`` rows at ``--rate`` per second for ``--duration-s`` over ``--accounts`` Google
  accounts, each row in its own transaction; a row's latency runs from its transaction's commit
  to the moment the Google emulator (zero latency, a child process) stored the event it asked
  for, through the real pipeline (``bench.outbox_pipeline``).
- ``outbox_writes_per_s`` against ``baseline_creates_per_s``: ``--burst`` rows over every
  account committed in one transaction, divided by the time from that commit to the emulator
  storing the last of their events; the baseline is as many events.insert calls made directly
  with the same client against the same emulator at the same concurrency as the replica's
  drains (``bench.outbox_provider``); ``writes_ratio`` is ours / baseline.

Invariants: every figure is measured in this run against a fresh database (created here and
dropped at the end) on the configured servers (``IW_DATABASE_URL`` and ``IW_REDIS_URL``), or on
embedded ones started here (with ``track_commit_timestamp`` on, for exact commit times); child
processes are stopped, or killed, on the way out; stdout carries only the result (one JSON line
with ``--json``), logs go to stderr. No figure is asserted anywhere.

    python -m bench.outbox            # human-readable table
    python -m bench.outbox --json     # one JSON object of figures
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from bench.outbox_pipeline import OutboxFigures, measure_outbox
from bench.report import render
from bench.sync import _fresh_database, _servers
from config.logs import configure_logging
from supervisor.services import ServiceUrls

P99_TARGET_MS = 200.0


async def _run(args: argparse.Namespace) -> OutboxFigures:
    async with (
        _servers() as (admin_dsn, redis_url, tracked),
        _fresh_database(admin_dsn, "outbox") as dsn,
    ):
        return await measure_outbox(
            ServiceUrls(dsn, redis_url, embedded=False),
            accounts=args.accounts,
            rate=args.rate,
            duration_s=args.duration_s,
            burst=args.burst,
            commit_timestamps=tracked,
        )


def figures_of(args: argparse.Namespace, run: OutboxFigures) -> dict[str, Any]:
    """The JSON object of figures."""
    writes_per_s = run.burst / run.burst_write_s if run.burst_write_s > 0 else 0.0
    baseline_per_s = run.burst / run.baseline_s if run.baseline_s > 0 else 0.0
    return {
        "outbox_write_p50_ms": round(run.p50_ms, 1),
        "outbox_write_p99_ms": round(run.p99_ms, 1),
        "outbox_write_max_ms": round(run.max_ms, 1),
        "outbox_write_target_p99_ms": P99_TARGET_MS,
        "outbox_accounts": run.accounts,
        "outbox_rate_per_s": args.rate,
        "outbox_duration_s": args.duration_s,
        "outbox_items": run.items,
        "outbox_samples": run.samples,
        "outbox_unmatched": run.unmatched,
        "outbox_writes_per_s": round(writes_per_s),
        "outbox_burst": run.burst,
        "outbox_burst_s": round(run.burst_write_s, 2),
        "outbox_burst_done_s": round(run.burst_done_s, 2),
        "outbox_burst_unmatched": run.burst_unmatched,
        "baseline_creates_per_s": round(baseline_per_s),
        "baseline_s": round(run.baseline_s, 2),
        "writes_ratio": round(writes_per_s / baseline_per_s, 2) if baseline_per_s else 0.0,
        "concurrency": run.concurrency,
        "echo_notifications": run.echo_notifications,
        "outbox_not_done": run.not_done,
        "commit_clock": run.commit_clock,
        "warmup_s": round(run.warmup_s, 1),
    }


def table(figures: dict[str, Any]) -> str:
    """The headline figures against their baselines and targets, then every figure."""
    rows = [
        ("figure", "ours", "baseline", "ratio", "target"),
        (
            "insert commit -> provider write p50 / p99",
            f"{figures['outbox_write_p50_ms']} / {figures['outbox_write_p99_ms']} ms",
            "-",
            "-",
            f"p99 < {P99_TARGET_MS:.0f} ms",
        ),
        (
            f"writes/s, burst of {figures['outbox_burst']:,}",
            f"{figures['outbox_writes_per_s']:,}",
            f"{figures['baseline_creates_per_s']:,} (direct creates)",
            str(figures["writes_ratio"]),
            "-",
        ),
    ]
    return render(rows, figures)


def main(argv: list[str] | None = None) -> None:
    """Run both phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1_000, help="Google accounts")
    parser.add_argument("--rate", type=float, default=50.0, help="inserts per second")
    parser.add_argument("--duration-s", type=float, default=12.0, help="how long rows arrive")
    parser.add_argument("--burst", type=int, default=5_000, help="rows of the throughput burst")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.rate <= 0 or args.duration_s <= 0 or args.burst < 1:
        parser.error("--accounts, --rate, --duration-s and --burst must be positive")
    configure_logging(args.log_level, "console", stream=sys.stderr)
    figures = figures_of(args, asyncio.run(_run(args)))
    if args.json:
        print(orjson.dumps(figures).decode())
        return
    print(table(figures))


if __name__ == "__main__":
    main()
