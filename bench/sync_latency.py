"""Push-path figures of the sync benchmark: edit-to-commit latency under load, and coalescing.

The real pipeline: the Google emulator (``bench.sync_emulator``) -> its push delivery -> the
gateway (``gateway.app.create_app``) -> the shard's Redis stream -> the replica's inbox -> the
account actor -> events.list -> ``apply_sync_page`` in a fenced transaction -> ``changes`` row.

Invariants:
- every account finished its first full sync and has its push channel open, and the pipeline
  is quiet, before anything is measured; periodic polling is 15 minutes, so only push drives
  the measured syncs;
- an edit's lag is the commit time of the ``changes`` row carrying exactly that edit's
  (account, event, etag), minus the wall-clock time taken just before the emulator applied the
  edit. The change row's own ``xmin`` is useless for this (the relay's UPDATE of
  ``published_at`` rewrites it), so a statement trigger installed in the bench database records
  each inserted change's transaction id and insert time in ``bench_commits``. The commit time is
  ``pg_xact_commit_timestamp`` of that transaction when ``track_commit_timestamp`` is on (the
  harness turns it on for the embedded server), else the insert time (the last statements of
  the transaction and its commit are missed), as ``commit_clock`` says;
- an edit superseded before it was listed (its etag never stored) is counted as unmatched;
- the shared request budget is the production gate (one Redis script per call) with a budget
  sized for the bench, so throttling is not what is measured;
- everything started here is owned by one exit stack and closed in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.sync_emulator import EmulatorLink, open_emulator
from cluster.keys import NOTIFICATIONS_GROUP, notifications_key
from cluster.rate_limit import BucketSpec, TokenBucket
from cluster.throttle_witness import Budget
from config.settings import load_settings
from gateway.app import STATS, GatewayStatistics
from providers.google.client import GoogleCalendarProvider
from providers.http import create_session
from sandbox.harness.gateway import serve_gateway
from store.accounts import create_account
from store.credentials import Credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import DEFAULT_SCHEMA, PgPool
from store.migrate import migrate
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.replica import Replica, open_replica
from supervisor.services import ServiceUrls

CLIENT_ID = "iw-bench-sync"
SHARDS = 16
EVENTS_PER_USER = 3
WARMUP_TIMEOUT_S = 600.0
SETTLE_TIMEOUT_S = 60.0
QUIET_S = 1.0
DRAIN_TIMEOUT_S = 30.0
# 100x Google's default project budget: the gate's Redis round trip stays, throttling does not.
BENCH_BUDGET = BucketSpec.per_period(1_000_000, 60, burst=100_000)

_MATCH_SQL = """
SELECT p.i, min({commit}) AS committed
FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS p(a, e, etag, i)
JOIN changes c ON c.account_id = p.a AND c.event_id = p.e AND c.etag = p.etag
JOIN bench_commits b ON b.change_id = c.id
GROUP BY p.i
"""
# The measuring instrument (bench database only): which transaction inserted each change.
_INSTRUMENT_SQL = """
CREATE TABLE bench_commits (
    change_id bigint PRIMARY KEY, xact xid NOT NULL, inserted_at timestamptz NOT NULL);
CREATE FUNCTION bench_record_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_commits SELECT id, pg_current_xact_id()::xid, clock_timestamp()
    FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_record_commit AFTER INSERT ON changes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_record_commit();
"""


class _BenchRuntime(AccountsRuntime):
    """The production runtime with a bench-sized request budget."""

    __slots__ = ()

    def _rate_gate(self, provider: str, account_id: str) -> Budget | None:
        name = f"bench:{provider}"
        budget = self._buckets.get(name)
        if budget is None:
            bucket = TokenBucket(self.replica.redis, name, BENCH_BUDGET)
            budget = self._buckets[name] = Budget(bucket, None, quorum=1, base_s=1.0)
        return budget


@dataclass(frozen=True, slots=True)
class PushFigures:
    """What the push phase measured."""

    accounts: int
    warmup_s: float
    edits: int
    samples: int
    unmatched: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    notifications: int  # stream entries the gateway appended during the edits
    commit_clock: str
    coalesce_notifications: int
    coalesce_list_calls: int
    coalesce_committed: bool


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _Bench:
    replica: Replica
    link: EmulatorLink
    gateway: GatewayStatistics
    commit_expr: str
    runtime: asyncio.Task[None] | None = None

    def check_runtime(self) -> None:
        """Raise the runtime's error if it stopped (it only stops by failing)."""
        if self.runtime is not None and self.runtime.done() and not self.runtime.cancelled():
            raise RuntimeError(f"the accounts runtime stopped: {self.runtime.exception()!r}")

    @property
    def pool(self) -> PgPool:
        return self.replica.pool

    async def stream_pending(self) -> int:
        """Notifications delivered to the replica and not yet acknowledged."""
        total = 0
        for shard in range(SHARDS):
            with contextlib.suppress(Exception):  # no stream or group yet: nothing pending
                info = await self.replica.redis.xpending(
                    notifications_key(shard), NOTIFICATIONS_GROUP
                )
                total += int(info["pending"])
        return total

    async def settle(self) -> bool:
        """Wait until no mailbox or stream holds work and nothing moves for QUIET_S."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last: tuple[int, int] | None = None
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            self.check_runtime()
            stats = self.replica.supervisor.registry.statistics()
            busy = stats.mailbox_depth + stats.by_state.get("busy", 0)
            busy += await self.stream_pending()
            changes = int(await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM changes"))
            now = (self.gateway.appended, changes)
            if busy or now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_S:
                return True
            await asyncio.sleep(0.1)
        return False

    async def match(
        self, accounts: dict[str, uuid.UUID], edits: list[tuple[str, str, str, float]]
    ) -> dict[int, float]:
        """Edit index -> lag in ms, for the edits whose change row committed."""
        if not edits:
            return {}
        rows = await self.pool.fetch(
            _MATCH_SQL.format(commit=self.commit_expr),
            [accounts[e[0]] for e in edits],
            [e[1] for e in edits],
            [e[2] for e in edits],
        )
        lags: dict[int, float] = {}
        for row in rows:
            index = int(row["i"]) - 1
            lags[index] = max(0.0, (row["committed"].timestamp() - edits[index][3]) * 1000.0)
        return lags


async def _seed(
    pool: PgPool, keyring: Keyring, link: EmulatorLink, secret: str, count: int
) -> dict[str, uuid.UUID]:
    """``count`` Google accounts, each a user of the emulator with a few events."""
    run = secrets.token_hex(3)
    users = [
        (f"bench-{i}-{run}@example.com", f"1//bench-{secrets.token_urlsafe(18)}")
        for i in range(count)
    ]
    await link.setup(CLIENT_ID, secret, users, EVENTS_PER_USER)
    accounts: dict[str, uuid.UUID] = {}

    async def one(email: str, refresh_token: str) -> None:
        account = await create_account(
            pool, provider="google", external_user_id=email, shard_count=SHARDS
        )
        await store_credentials(pool, keyring, account.id, Credentials(account.id, refresh_token))
        accounts[email] = account.id

    for start in range(0, count, 50):
        await asyncio.gather(*(one(e, t) for e, t in users[start : start + 50]))
    return accounts


async def _warm_up(bench: _Bench, accounts: dict[str, uuid.UUID]) -> None:
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    ids = list(accounts.values())
    while True:
        bench.check_runtime()
        watching = int(
            await bench.pool.fetchval(
                "SELECT count(DISTINCT account_id) FROM push_channels"
                " WHERE account_id = ANY($1::uuid[])",
                ids,
            )
        )
        if watching >= len(ids):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {watching}/{len(ids)} accounts watching after warm-up")
        await asyncio.sleep(0.5)
    if not await bench.settle():
        raise RuntimeError("the pipeline did not settle after warm-up")


async def _edits_phase(
    bench: _Bench, accounts: dict[str, uuid.UUID], edits_per_s: float, duration_s: float
) -> tuple[int, list[float], int, int]:
    """(edits, lags in ms, unmatched edits, notifications appended)."""
    appended = bench.gateway.appended
    await bench.link.start_edits(edits_per_s, duration_s)
    running = True
    while running:
        await asyncio.sleep(0.5)
        running, _, _ = await bench.link.edits()
    _, edits, _ = await bench.link.edits()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    lags = await bench.match(accounts, edits)
    while len(lags) < len(edits) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        lags = await bench.match(accounts, edits)
        if await bench.settle():
            lags = await bench.match(accounts, edits)
            break
    return (
        len(edits),
        list(lags.values()),
        len(edits) - len(lags),
        bench.gateway.appended - appended,
    )


async def _coalesce_phase(
    bench: _Bench, accounts: dict[str, uuid.UUID], notifications: int
) -> tuple[int, int, bool]:
    """(notifications appended, list calls, committed) for a burst on one calendar."""
    email = next(iter(accounts))
    await bench.settle()
    calls_before = await bench.link.list_calls(email)
    appended = bench.gateway.appended
    last = await bench.link.burst(email, notifications)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    committed = False
    while not committed and time.monotonic() < deadline:
        committed = bool(await bench.match(accounts, [last]))
        if not committed:
            await asyncio.sleep(0.05)
    await bench.settle()
    calls = await bench.link.list_calls(email) - calls_before
    return bench.gateway.appended - appended, calls, committed


@dataclass(slots=True)
class Warmed:
    """A running pipeline whose accounts all synced and watch (``open_warmed_pipeline``)."""

    bench: _Bench
    link: EmulatorLink
    harness_http: aiohttp.ClientSession  # the harness's own session (emulator control)
    client: GoogleCalendarProvider  # the replica's Google client
    accounts: dict[str, uuid.UUID]  # by emulator user email
    warmup_s: float


async def open_warmed_pipeline(
    stack: contextlib.AsyncExitStack,
    urls: ServiceUrls,
    *,
    accounts: int,
    child_process: bool,
    commit: str,
    replica_id: str,
    instrument: bool = False,
    **settings: Any,
) -> Warmed:
    """The Google emulator, the gateway and a replica's runtime for the rest of ``stack``, with
    ``accounts`` seeded, synced and watching; ``commit`` is the SQL of a row's commit time,
    ``instrument`` records edits' commits (``_INSTRUMENT_SQL``), ``settings`` add to the
    replica's."""
    secret = secrets.token_urlsafe(18)
    keyring = Keyring("bench", {"bench": generate_key()})
    harness_http = await stack.enter_async_context(aiohttp.ClientSession())
    link = await stack.enter_async_context(open_emulator(harness_http, child_process=child_process))
    await migrate(urls.database_url, DEFAULT_SCHEMA)
    gateway_url, app = await serve_gateway(
        stack, urls.database_url, urls.redis_url, DEFAULT_SCHEMA, max_pool_size=10
    )
    replica_settings = load_settings(
        database_url=urls.database_url,
        redis_url=urls.redis_url,
        monitor_enabled=False,
        replica_id=replica_id,
        shard_count=SHARDS,
        public_base_url=gateway_url,
        **settings,
    )
    replica = await stack.enter_async_context(open_replica(replica_settings, urls))
    http = await stack.enter_async_context(create_session())
    client = GoogleCalendarProvider(
        http,
        api_base_url=link.api_base_url,
        token_uri=link.token_uri,
        client_id=CLIENT_ID,
        client_secret=secret,
    )
    stack.push_async_callback(client.aclose)
    if instrument:
        await replica.pool.execute(_INSTRUMENT_SQL)
    bench = _Bench(replica, link, app[STATS], commit)
    ids = await _seed(replica.pool, keyring, link, secret, accounts)
    runtime = _BenchRuntime(replica, {"google": client}, keyring, scan_every_s=1.0)
    started = time.monotonic()
    task = asyncio.get_running_loop().create_task(runtime.run(), name="bench.runtime")
    stack.push_async_callback(_cancel, task)
    bench.runtime = task
    await _warm_up(bench, ids)
    return Warmed(bench, link, harness_http, client, ids, time.monotonic() - started)


async def measure_push(
    urls: ServiceUrls,
    *,
    accounts: int,
    edits_per_s: float,
    duration_s: float,
    notifications: int,
    child_process: bool,
    commit_timestamps: bool,
) -> PushFigures:
    """Run the push phase against the database and Redis at ``urls``; see the module doc."""
    commit = "pg_xact_commit_timestamp(b.xact)" if commit_timestamps else "b.inserted_at"
    async with contextlib.AsyncExitStack() as stack:
        warmed = await open_warmed_pipeline(
            stack,
            urls,
            accounts=accounts,
            child_process=child_process,
            commit=commit,
            replica_id="bench-sync",
            instrument=True,
        )
        bench, ids, warmup_s = warmed.bench, warmed.accounts, warmed.warmup_s
        edits, lags, unmatched, appended = await _edits_phase(bench, ids, edits_per_s, duration_s)
        burst_appended, list_calls, committed = await _coalesce_phase(bench, ids, notifications)
        return PushFigures(
            accounts=accounts,
            warmup_s=warmup_s,
            edits=edits,
            samples=len(lags),
            unmatched=unmatched,
            p50_ms=percentile(lags, 0.5),
            p99_ms=percentile(lags, 0.99),
            max_ms=max(lags, default=0.0),
            notifications=appended,
            commit_clock="commit_timestamp" if commit_timestamps else "change_insert",
            coalesce_notifications=burst_appended,
            coalesce_list_calls=list_calls,
            coalesce_committed=committed,
        )
    raise AssertionError("unreachable")  # the exit stack never swallows


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
