"""The outbox benchmark's measurements: insert-to-provider-write latency, and burst throughput.

The real pipeline: the application's INSERT (``bench.outbox_app``, a child process) -> the
``outbox_notify`` trigger's NOTIFY at commit -> the replica's listener -> an ``("outbox", None)``
post -> the account actor's drain (``actors.account.outbound``) -> events.insert at the Google
emulator (``bench.sync_emulator``, a child process) -> the outcome committed. Each write's echo
comes back as the emulator's push notification through the gateway and an inbound sync, as in
production. The replica, the gateway and the harness share one process and loop.

Invariants:
- every account finished its first full sync and has its push channel open, and the pipeline
  is quiet, before anything is measured; the fallback outbox poll runs once at the listener's
  connect and then hourly, so only NOTIFY wakes the measured drains;
- a write's latency is the emulator's ``created`` of the event (``bench.outbox_provider``) minus
  the commit of the INSERT's transaction: ``pg_xact_commit_timestamp`` when
  ``track_commit_timestamp`` is on, else the time taken just before COMMIT was sent
  (``commit_clock`` says which); all three processes read the same machine's wall clock;
- a row with no event at the emulator when every row is finished is counted as unmatched;
- the shared request budget is the production gate with a bench-sized budget
  (``bench.sync_latency``), so throttling is not what is measured;
- everything started here is owned by one exit stack and closed in reverse order; children
  are stopped (killed if they linger) on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

import aiohttp

from bench.outbox_app import Inserted, application, insert_burst, title_of
from bench.outbox_provider import created_times, direct_creates
from bench.sync_emulator import EmulatorLink
from bench.sync_latency import (
    CLIENT_ID,
    _Bench,
    open_warmed_pipeline,
    percentile,
)
from providers.google.client import GoogleCalendarProvider
from store.db import DEFAULT_SCHEMA, PgPool, create_pool
from supervisor.services import ServiceUrls

POLL_S = 0.05
DRAIN_TIMEOUT_S = 120.0
NO_POLL_S = 3600.0  # the fallback poll's period: out of the way of the measured wake-ups

_COMMITS_SQL = "SELECT x, pg_xact_commit_timestamp(x) AS at FROM unnest($1::xid[]) AS x"


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """What the outbox phases measured."""

    accounts: int
    warmup_s: float
    items: int
    samples: int
    unmatched: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    commit_clock: str
    burst: int
    burst_unmatched: int
    burst_write_s: float  # the burst's commit -> its last write at the emulator
    burst_done_s: float  # the burst's commit -> no row pending (seen by a 50 ms poll)
    baseline_s: float  # as many direct creates, same concurrency
    concurrency: int
    echo_notifications: int  # stream entries the gateway appended during both phases
    not_done: int  # rows left in another state than done at the end


@dataclass(slots=True)
class _Harness:
    bench: _Bench
    link: EmulatorLink
    http: aiohttp.ClientSession
    client: GoogleCalendarProvider
    dsn: str
    commit_timestamps: bool

    @property
    def pool(self) -> PgPool:
        return self.bench.pool

    async def pending(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'pending'"))

    async def drained(self, timeout_s: float) -> None:
        """Wait until no outbox row is pending."""
        deadline = time.monotonic() + timeout_s
        while await self.pending():
            self.bench.check_runtime()
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox rows still pending after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)

    async def commit_times(self, rows: list[Inserted]) -> dict[str, float]:
        """Row key -> its transaction's commit (epoch seconds) on the configured clock."""
        if not self.commit_timestamps:
            return {r.key: r.before_commit for r in rows}
        found = await self.pool.fetch(_COMMITS_SQL, [r.xact for r in rows])
        at = {int(f["x"]): f["at"].timestamp() for f in found if f["at"] is not None}
        return {r.key: at[r.xact] for r in rows if r.xact in at}


async def _latency_phase(
    harness: _Harness, emails: dict[uuid.UUID, str], rate: float, duration_s: float
) -> tuple[int, list[float]]:
    """(rows inserted, latencies in ms of the rows whose event was found)."""
    bench = harness.bench
    async with application(harness.dsn, sorted(emails), rate, duration_s) as app:
        while not app.done():
            await asyncio.wait({app}, timeout=0.5)
            bench.check_runtime()
        rows = app.result()
    await harness.drained(DRAIN_TIMEOUT_S)
    commits = await harness.commit_times(rows)
    created = await created_times(harness.http, harness.link, emails.values())
    lags = [
        max(0.0, (created[title_of(key)] - at) * 1000.0)
        for key, at in commits.items()
        if title_of(key) in created
    ]
    return len(rows), lags


async def _burst_phase(
    harness: _Harness, emails: dict[uuid.UUID, str], count: int
) -> tuple[float, float, int]:
    """(commit -> last write s, commit -> drained s, rows without an event) for one burst."""
    pool = await create_pool(harness.dsn, DEFAULT_SCHEMA, min_size=1, max_size=1)
    try:
        xact, before = await insert_burst(pool, sorted(emails), count)
    finally:
        await pool.close()
    await harness.drained(DRAIN_TIMEOUT_S + count / 50)
    drained_at = time.time()
    commits = await harness.commit_times([Inserted("burst", xact, before)])
    committed = commits["burst"]
    created = await created_times(harness.http, harness.link, emails.values())
    mine = [at for title, at in created.items() if title.startswith(title_of("B"))]
    last = max(mine, default=committed)
    return last - committed, drained_at - committed, count - len(mine)


async def measure_outbox(
    urls: ServiceUrls,
    *,
    accounts: int,
    rate: float,
    duration_s: float,
    burst: int,
    commit_timestamps: bool,
) -> OutboxFigures:
    """Run both outbox phases against the database and Redis at ``urls``; see the module doc."""
    async with contextlib.AsyncExitStack() as stack:
        warmed = await open_warmed_pipeline(
            stack,
            urls,
            accounts=accounts,
            child_process=True,
            commit="b.inserted_at",
            replica_id="bench-outbox",
            outbox_poll_s=NO_POLL_S,
        )
        bench, link, harness_http, client = (
            warmed.bench,
            warmed.link,
            warmed.harness_http,
            warmed.client,
        )
        emails = {account_id: email for email, account_id in warmed.accounts.items()}
        warmup_s, replica = warmed.warmup_s, bench.replica
        harness = _Harness(bench, link, harness_http, client, urls.database_url, commit_timestamps)
        appended = bench.gateway.appended
        items, lags = await _latency_phase(harness, emails, rate, duration_s)
        await bench.settle()
        write_s, done_s, burst_unmatched = await _burst_phase(harness, emails, burst)
        echoes = bench.gateway.appended - appended
        await bench.settle()
        # An account writes its items one after another: at most one call per account at once.
        concurrency = min(replica.settings.sync_concurrency, accounts)
        baseline_s = await direct_creates(
            harness_http,
            link,
            client,
            CLIENT_ID,
            users=accounts,
            count=burst,
            concurrency=concurrency,
        )
        not_done = int(
            await replica.pool.fetchval("SELECT count(*) FROM outbox WHERE state <> 'done'")
        )
        return OutboxFigures(
            accounts=accounts,
            warmup_s=warmup_s,
            items=items,
            samples=len(lags),
            unmatched=items - len(lags),
            p50_ms=percentile(lags, 0.5),
            p99_ms=percentile(lags, 0.99),
            max_ms=max(lags, default=0.0),
            commit_clock="commit_timestamp" if commit_timestamps else "before_commit",
            burst=burst,
            burst_unmatched=burst_unmatched,
            burst_write_s=write_s,
            burst_done_s=done_s,
            baseline_s=baseline_s,
            concurrency=concurrency,
            echo_notifications=echoes,
            not_done=not_done,
        )
    raise AssertionError("unreachable")  # the exit stack never swallows
