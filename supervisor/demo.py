"""The live demo: the real product path end to end, in one process, with a convergence check.

Google and Microsoft emulators with the real clients, the webhook gateway on loopback, and a
replica running the real ``AccountsRuntime`` (account actors, shard inbox, change-feed relay).
Sample accounts are seeded half Google, half Microsoft; once every one of them finished its first
full sync and opened its push channel, simulated people edit the calendars. The actors poll only
every 15 minutes, so what keeps Postgres current is push: emulator -> gateway -> Redis shard
stream -> inbox -> actor -> fenced sync transaction -> ``changes`` row. The status line shows
that flow once a second; at the end the database is compared with a fresh listing from every
emulator.

Invariants:
- everything started here (emulators, clients, gateway, replica, runtime task, people task) is
  owned by one exit stack and closed in reverse order, shielded from cancellation, so Ctrl-C
  tears down as cleanly as the end of ``duration_s``;
- the runtime's settings are the caller's with ``public_base_url`` set to the in-process gateway
  and a small ``shard_count``; nothing else of the caller's configuration is changed;
- only the accounts created here are edited, measured and compared; emulator seeding is never
  counted as an edit;
- an edit's time is taken *before* the emulator applies it, so a measured lag (first ``changes``
  row of that event at or after the edit, ``created_at`` minus edit time) never undercounts the
  true delay of the commit's transaction start; edits that never produce a change row (renamed
  to the same title, or created and deleted between two syncs) are counted as unobserved;
- the finish (stop the people, wait for quiescence, compare) is bounded in time and runs even
  when the demo is cancelled; a cancelled demo prints its comparison and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import anyio
import structlog
from aiohttp import web
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import STATS, GatewayStatistics, create_app
from gateway.streams import notifications_key
from providers.emulation.world import EmulatedProviders, open_emulated_providers
from providers.errors import ProviderError
from providers.interface import CalendarProvider
from providers.models import SyncPage, SyncWindow
from store.accounts import Provider, create_account
from store.calendars import list_calendar_states
from store.credentials import Credentials, load_credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool, create_pool
from store.events import export_events
from store.migrate import migrate
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.actor_table import summary_line
from supervisor.demo_providers import (
    DEMO_CLIENT_ID,
    EmulatedProvider,
    GoogleSide,
    MicrosoftSide,
)
from supervisor.inbox import GROUP
from supervisor.replica import Replica, open_replica
from supervisor.services import ServiceUrls

log = structlog.get_logger("supervisor.live_demo")

DEMO_SHARDS = 16
WARMUP_TIMEOUT_S = 60.0  # every account synced and watching, or the people start anyway
QUIET_FOR_S = 2.5  # no pending work for this long counts as quiescence
QUIESCE_TIMEOUT_S = 20.0
FINISH_TIMEOUT_S = 60.0  # the whole finish, comparison included
LAG_POLL_S = 0.5

_EventKey = tuple[str, str, str | None]  # (calendar id, event id, title)
_UNSETTLED = frozenset({"starting", "busy", "backoff", "held"})


def demo_keyring(settings: Settings) -> Keyring:
    """The configured keyring, or a throwaway one (the demo's data is throwaway too)."""
    if settings.encryption_keys:
        active, keys = settings.keyring_material()
        return Keyring(active, keys)
    return Keyring("demo", {"demo": generate_key()})


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What one live demo run showed."""

    accounts: int
    matched_accounts: int
    edits: int
    changes: int  # change rows committed after the people started
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    notifications: int  # stream entries the gateway appended
    lag_samples: int = 0
    unobserved_edits: int = 0
    differences: tuple[str, ...] = ()

    @property
    def all_matched(self) -> bool:
        """Whether Postgres held exactly what every emulator lists."""
        return self.matched_accounts == self.accounts


@dataclass(slots=True)
class EditJournal:
    """Edits of the simulated people awaiting their change row, and the lags measured."""

    accounts: dict[str, uuid.UUID] = field(default_factory=dict)  # user email -> account id
    recording: bool = False
    edits: int = 0
    errors: int = 0
    pending: list[tuple[uuid.UUID, str, datetime]] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)

    def record(self, email: str, event_id: str, at: datetime) -> None:
        """Remember one edit of ``event_id`` made at ``at`` (ignored while seeding)."""
        account_id = self.accounts.get(email)
        if self.recording and account_id is not None:
            self.edits += 1
            self.pending.append((account_id, event_id, at))

    def percentile(self, fraction: float) -> float | None:
        """Nearest-rank percentile of the lags measured so far, or None before the first."""
        if not self.lags_ms:
            return None
        ordered = sorted(self.lags_ms)
        rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
        return ordered[rank - 1]


class _RecordingControl:
    """An emulator's control object that journals every create, update and delete."""

    def __init__(self, inner: Any, journal: EditJournal) -> None:
        self._inner = inner
        self._journal = journal

    def create_event(self, email: str, body: dict[str, Any], *rest: Any) -> dict[str, Any]:
        at = datetime.now(UTC)
        created: dict[str, Any] = self._inner.create_event(email, body, *rest)
        self._journal.record(email, str(created["id"]), at)
        return created

    def update_event(self, email: str, event_id: str, changes: dict[str, Any]) -> Any:
        at = datetime.now(UTC)
        updated = self._inner.update_event(email, event_id, changes)
        self._journal.record(email, event_id, at)
        return updated

    def delete_event(self, email: str, event_id: str) -> None:
        at = datetime.now(UTC)
        self._inner.delete_event(email, event_id)
        self._journal.record(email, event_id, at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _JournaledGoogle(GoogleSide):
    """Google's simulated people, their edits journaled."""

    journal: EditJournal

    def _control(self) -> Any:
        return _RecordingControl(GoogleSide._control(self), self.journal)


class _JournaledMicrosoft(MicrosoftSide):
    """Microsoft's simulated people, their edits journaled."""

    journal: EditJournal

    def _control(self) -> Any:
        return _RecordingControl(MicrosoftSide._control(self), self.journal)


def _sides(
    world: EmulatedProviders, rng: random.Random, journal: EditJournal
) -> dict[str, EmulatedProvider]:
    google = _JournaledGoogle(world.clients["google"], rng, emulator=world.google)
    microsoft = _JournaledMicrosoft(world.clients["microsoft"], rng, emulator=world.microsoft)
    google.journal = journal
    microsoft.journal = journal
    return {"google": google, "microsoft": microsoft}


async def _seed(
    pool: PgPool,
    keyring: Keyring,
    sides: Mapping[str, EmulatedProvider],
    journal: EditJournal,
    *,
    count: int,
    shards: int,
) -> list[uuid.UUID]:
    """``count`` accounts, alternating providers, each with a seeded user in its emulator."""
    run = secrets.token_hex(3)  # a configured database may hold an earlier run's accounts
    created: list[uuid.UUID] = []
    for i in range(count):
        provider: Provider = "google" if i % 2 == 0 else "microsoft"
        email = f"user-{i}-{run}@example.com"
        refresh_token = f"1//demo-{secrets.token_urlsafe(24)}"
        sides[provider].add_user(email, refresh_token)
        account = await create_account(
            pool, provider=provider, external_user_id=email, shard_count=shards
        )
        await store_credentials(pool, keyring, account.id, Credentials(account.id, refresh_token))
        journal.accounts[email] = account.id
        created.append(account.id)
    return created


async def _simulate_people(
    sides: list[EmulatedProvider],
    journal: EditJournal,
    rng: random.Random,
    edits_per_s: float,
    fault_rate: float,
) -> None:
    """Creates, renames and deletes at a steady pace; now and then a provider answers 503."""
    while True:
        await anyio.sleep(1.0 / edits_per_s)
        side = rng.choice(sides)
        try:
            side.edit_once()
        except Exception as exc:  # an emulator refusing an edit is shown, never fatal
            journal.errors += 1
            log.warning("simulated edit failed", error=str(exc))
        if rng.random() < fault_rate * 5:
            side.fail_next_list()


_LAG_SQL = """
SELECT p.i, min(c.created_at) AS first_change
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS p(a, e, at, i)
JOIN changes c ON c.account_id = p.a AND c.event_id = p.e AND c.created_at >= p.at
GROUP BY p.i
"""


async def _measure_lags(pool: PgPool, journal: EditJournal) -> None:
    """Match pending edits with their first change row; keep the unmatched ones pending."""
    pending = list(journal.pending)  # the people may append while we query
    if not pending:
        return
    rows = await pool.fetch(
        _LAG_SQL, [p[0] for p in pending], [p[1] for p in pending], [p[2] for p in pending]
    )
    matched: dict[int, datetime] = {int(r["i"]) - 1: r["first_change"] for r in rows}
    for index, first_change in matched.items():
        lag = (first_change - pending[index][2]).total_seconds() * 1000.0
        journal.lags_ms.append(max(0.0, lag))
    kept = [p for i, p in enumerate(pending) if i not in matched]
    journal.pending = kept + journal.pending[len(pending) :]


@dataclass(slots=True)
class _Run:
    """Everything the status loop, the finish and the comparison look at."""

    replica: Replica
    runtime: AccountsRuntime
    runtime_task: asyncio.Task[None]
    gateway: GatewayStatistics
    clients: Mapping[str, CalendarProvider]
    keyring: Keyring
    journal: EditJournal
    account_ids: list[uuid.UUID]
    out: TextIO
    interactive: bool
    changes_before: int = 0  # highest change id when the people started
    shown_at: float = float("-inf")

    @property
    def pool(self) -> PgPool:
        return self.replica.pool

    def check_runtime(self) -> None:
        """Raise the runtime's error if it stopped (it only stops by failing)."""
        if self.runtime_task.done() and not self.runtime_task.cancelled():
            error = self.runtime_task.exception()
            raise RuntimeError(f"the accounts runtime stopped: {error!r}") from error

    async def watching(self) -> int:
        """Demo accounts with at least one push channel open."""
        value = await self.pool.fetchval(
            "SELECT count(DISTINCT account_id) FROM push_channels"
            " WHERE account_id = ANY($1::uuid[])",
            self.account_ids,
        )
        return int(value)

    async def new_changes(self) -> int:
        value = await self.pool.fetchval(
            "SELECT count(*) FROM changes WHERE id > $1", self.changes_before
        )
        return int(value)

    async def stream_pending(self) -> int:
        """Notifications delivered to the replica and not yet acknowledged, over all shards."""
        redis = self.replica.redis
        total = 0
        for shard in range(self.replica.settings.shard_count):
            with contextlib.suppress(Exception):  # no stream or group yet: nothing pending
                info = await redis.xpending(notifications_key(shard), GROUP)
                total += int(info["pending"])
        return total

    async def status(self, phase: str) -> str:
        stats = self.replica.supervisor.registry.statistics()
        events = await self.pool.fetchval("SELECT count(*) FROM events WHERE status <> 'cancelled'")
        p50, p99 = self.journal.percentile(0.5), self.journal.percentile(0.99)
        errors = self.journal.errors + self.gateway.unavailable
        return (
            f"{phase}: {summary_line(stats)}; notifications {self.gateway.appended};"
            f" events {events}; edits {self.journal.edits}; changes {await self.new_changes()};"
            f" lag p50 {_ms(p50)} p99 {_ms(p99)}; errors {errors}"
        )

    async def show_status(self, phase: str) -> None:
        """The live status line, at most once a second."""
        now = time.monotonic()
        if now - self.shown_at < 1.0:
            return
        self.shown_at = now
        line = await self.status(phase)
        self.out.write(f"\r\x1b[2K{line}" if self.interactive else f"{line}\n")
        self.out.flush()

    def work_due(self) -> int:
        """Actors crashed, starting, or with a retry (any deadline) due within the settle time;
        the 15-minute poll and push renewals lie beyond it."""
        now = asyncio.get_running_loop().time()
        horizon = QUIESCE_TIMEOUT_S
        due = 0
        for snap in self.replica.supervisor.registry.snapshots(now):
            if snap.state in _UNSETTLED or any(left <= horizon for _, left in snap.deadlines):
                due += 1
        return due

    def say(self, line: str) -> None:
        """A line that stays, below the live status line when there is one."""
        self.out.write(f"\r\x1b[2K{line}\n" if self.interactive else f"{line}\n")
        self.out.flush()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


async def _warm_up(run: _Run) -> None:
    """Wait until every demo account finished its full sync and watches its calendar."""
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while True:
        run.check_runtime()
        watching = await run.watching()
        if watching >= len(run.account_ids):
            run.say(f"all {watching} accounts synced and watching (push channels open)")
            return
        if time.monotonic() > deadline:
            run.say(f"only {watching}/{len(run.account_ids)} accounts watching; starting anyway")
            return
        await run.show_status(f"warming up ({watching}/{len(run.account_ids)} watching)")
        await anyio.sleep(0.5)


async def _watch(run: _Run, duration_s: float | None) -> None:
    """Status once a second and lag measurement until ``duration_s`` passes (or cancelled)."""
    started = time.monotonic()
    while duration_s is None or time.monotonic() - started < duration_s:
        run.check_runtime()
        await _measure_lags(run.pool, run.journal)
        await run.show_status("running")
        await anyio.sleep(LAG_POLL_S)


async def _quiesce(run: _Run) -> bool:
    """Wait until nothing is pending (mailboxes, streams) and nothing moves for QUIET_FOR_S."""
    deadline = time.monotonic() + QUIESCE_TIMEOUT_S
    last: tuple[int, int] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await _measure_lags(run.pool, run.journal)
        stats = run.replica.supervisor.registry.statistics()
        busy = stats.mailbox_depth + run.work_due() + await run.stream_pending()
        now = (run.gateway.appended, await run.new_changes())
        if busy or now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_FOR_S:
            return True
        await run.show_status("settling")
        await anyio.sleep(0.25)
    return False


async def _provider_view(run: _Run, provider: str, account_id: uuid.UUID) -> set[_EventKey]:
    """A fresh full listing of every synced calendar over its stored window, from the emulator."""
    creds = await load_credentials(run.pool, run.keyring, account_id)
    if creds is None or creds.access_token is None:
        raise LookupError("no access token stored (the account never synced)")
    client = run.clients[provider]
    view: set[_EventKey] = set()
    for state in await list_calendar_states(run.pool, account_id, include_removed=False):
        if not state.sync_enabled or state.window_start is None or state.window_end is None:
            continue
        window = SyncWindow(state.window_start, state.window_end)
        listed: dict[str, _EventKey] = {}
        cursor: str | None = None
        while True:
            page = await _fetch_retrying(client, creds.access_token, state.id, window, cursor)
            for event in page.upserts:
                if event.status.value == "cancelled":
                    listed.pop(event.id, None)
                else:
                    listed[event.id] = (state.id, event.id, event.title)
            for removal in page.removals:
                listed.pop(removal.id, None)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        view |= set(listed.values())
    return view


async def _fetch_retrying(
    client: CalendarProvider, token: str, calendar_id: str, window: SyncWindow, cursor: str | None
) -> SyncPage:
    """One page; a 503 left over from the people's fault injection is retried."""
    for attempt in range(5):
        try:
            return await client.fetch_sync_page(token, calendar_id, window=window, cursor=cursor)
        except ProviderError:
            if attempt == 4:
                raise
            await anyio.sleep(0.2)
    raise AssertionError("unreachable")


async def _compare(run: _Run, providers: Mapping[uuid.UUID, str]) -> tuple[int, list[str]]:
    """Matched accounts and, per differing account, what differs."""
    matched, differences = 0, []
    for account_id in run.account_ids:
        provider = providers[account_id]
        rows = await export_events(run.pool, account_id)
        stored = {
            (r["calendar_id"], r["id"], r["title"]) for r in rows if r["status"] != "cancelled"
        }
        try:
            listed = await _provider_view(run, provider, account_id)
        except (ProviderError, LookupError) as exc:
            differences.append(f"{provider} account {account_id}: cannot list: {exc}")
            continue
        if stored == listed:
            matched += 1
            continue
        missing, extra = sorted(listed - stored, key=str), sorted(stored - listed, key=str)
        differences.append(
            f"{provider} account {account_id}: missing in database {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}),"
            f" only in database {extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)})"
        )
    return matched, differences


async def _finish(
    run: _Run, people: asyncio.Task[None], providers: Mapping[uuid.UUID, str]
) -> DemoSummary:
    """Stop the people, let the pipeline settle, compare, print and summarize."""
    people.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await people
    run.journal.recording = False
    quiet = await _quiesce(run)
    await _measure_lags(run.pool, run.journal)
    if not quiet:
        run.say(f"no quiescence within {QUIESCE_TIMEOUT_S:.0f}s; comparing anyway")
    matched, differences = await _compare(run, providers)
    summary = DemoSummary(
        accounts=len(run.account_ids),
        matched_accounts=matched,
        edits=run.journal.edits,
        changes=await run.new_changes(),
        lag_p50_ms=run.journal.percentile(0.5),
        lag_p99_ms=run.journal.percentile(0.99),
        notifications=run.gateway.appended,
        lag_samples=len(run.journal.lags_ms),
        unobserved_edits=len(run.journal.pending),
        differences=tuple(differences),
    )
    run.say(await run.status("done"))
    run.say(
        f"edits {summary.edits} ({summary.lag_samples} measured, {summary.unobserved_edits}"
        f" without a change row); changes {summary.changes}; notifications"
        f" {summary.notifications}; sync lag p50 {_ms(summary.lag_p50_ms)}"
        f" p99 {_ms(summary.lag_p99_ms)}"
    )
    if summary.all_matched:
        run.say(f"database matches the emulators: yes ({matched}/{summary.accounts} accounts)")
    else:
        run.say(f"database matches the emulators: NO ({matched}/{summary.accounts} accounts)")
        for line in differences:
            run.say(f"  {line}")
    return summary


async def run_demo(
    settings: Settings,
    urls: ServiceUrls,
    *,
    accounts: int,
    duration_s: float | None,
    edits_per_s: float,
    fault_rate: float,
    out: TextIO,
) -> DemoSummary:
    """Run the real pipeline with ``accounts`` sample accounts; see the module docstring."""
    if accounts < 1 or edits_per_s <= 0:
        raise ValueError("accounts must be >= 1 and edits_per_s > 0")
    stack = contextlib.AsyncExitStack()
    try:
        world = await stack.enter_async_context(
            open_emulated_providers(DEMO_CLIENT_ID, secrets.token_urlsafe(24))
        )
        keyring = demo_keyring(settings)
        await migrate(urls.database_url, settings.db_schema)

        # The gateway, with its own pool and Redis client as in production.
        gateway_pool = await create_pool(urls.database_url, settings.db_schema)
        stack.push_async_callback(gateway_pool.close)
        gateway_redis = Redis.from_url(urls.redis_url)
        stack.push_async_callback(gateway_redis.aclose)
        app = create_app(gateway_pool, gateway_redis)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        gateway_url = f"http://127.0.0.1:{port}"

        replica_settings = settings.model_copy(
            update={"public_base_url": gateway_url, "shard_count": DEMO_SHARDS}
        )
        replica = await stack.enter_async_context(open_replica(replica_settings, urls))
        rng = random.Random()
        journal = EditJournal()
        sides = _sides(world, rng, journal)
        account_ids = await _seed(
            replica.pool,
            keyring,
            sides,
            journal,
            count=accounts,
            shards=replica_settings.shard_count,
        )
        providers = {
            account_ids[i]: ("google" if i % 2 == 0 else "microsoft") for i in range(accounts)
        }

        runtime = AccountsRuntime(replica, world.clients, keyring, scan_every_s=1.0)
        runtime_task = asyncio.get_running_loop().create_task(
            runtime.run(), name="live-demo.runtime"
        )
        stack.push_async_callback(_cancel, runtime_task)
        run = _Run(
            replica,
            runtime,
            runtime_task,
            app[STATS],
            world.clients,
            keyring,
            journal,
            account_ids,
            out,
            out.isatty(),
        )
        run.say(f"gateway {gateway_url}; {accounts} accounts; {edits_per_s:g} edits/s")
        if replica_settings.monitor_enabled:
            run.say(
                f"monitor: telnet {replica_settings.monitor_host} {replica_settings.monitor_port}"
                " (try: actors, actor <id>)"
            )
        await _warm_up(run)

        run.changes_before = int(
            await replica.pool.fetchval("SELECT coalesce(max(id), 0) FROM changes")
        )
        journal.recording = True
        people = asyncio.get_running_loop().create_task(
            _simulate_people(list(sides.values()), journal, rng, edits_per_s, fault_rate),
            name="live-demo.people",
        )
        stack.push_async_callback(_cancel, people)
        try:
            await _watch(run, duration_s)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT_S):
                await _finish(run, people, providers)
            raise
        with anyio.fail_after(FINISH_TIMEOUT_S):
            return await _finish(run, people, providers)
    finally:
        with anyio.CancelScope(shield=True):
            await stack.aclose()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # already reported by check_runtime; teardown goes on
        log.warning("task failed", task=task.get_name(), error=repr(exc))
