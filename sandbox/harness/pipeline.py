"""The whole pipeline in one test process, for end-to-end tests: both provider emulators with the
real clients, the webhook gateway (aiohttp, loopback), a replica running ``AccountsRuntime`` on
the test's Postgres database and the session's Redis, and the helpers those tests share:
accounts, the emulators' own export against ``store.events.export_events``, an edit history,
a deterministic actor crash in the middle of a sync, and quiescence.

Nothing here reaches into product code beyond its public entry points; the one test-only lever
is a Postgres row lock held by the test (``crash_mid_sync``) so that a real connection failure
hits an actor inside its sync transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from actors.account.messages import SyncNow
from cluster.keys import NOTIFICATIONS_GROUP, notifications_key
from config.settings import load_settings
from gateway.app import STATS, GatewayStatistics
from operations.accounts import export_line
from sandbox.emulators.shared.world import EmulatedProviders, open_emulated_providers
from sandbox.harness.gateway import serve_gateway
from store.accounts import create_account
from store.credentials import Credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool, PgPoolConnection
from store.events import export_events
from store.vocabulary import Provider
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.replica import Replica, open_replica
from supervisor.services import ServiceUrls

CLIENT_ID = "iw-e2e-client"
SCHEMA = "integration_worker"
GRAPH_DEFAULT = "primary"  # how our client names a mailbox's default calendar
_UNSETTLED = frozenset({"starting", "busy", "backoff", "held"})
HORIZON_S = 60.0  # a deadline due within this is pending work (retries); polls lie beyond

# (calendar id, event id) -> the exported row (with etag); one account's whole state.
State = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Person:
    """One connected account and its user in an emulator."""

    account_id: UUID
    provider: Provider
    email: str
    shard: int


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Pipeline:
    """Everything one end-to-end test runs, and what it looks at."""

    world: EmulatedProviders
    replica: Replica
    runtime: AccountsRuntime
    runtime_task: asyncio.Task[None]
    gateway: GatewayStatistics
    keyring: Keyring
    pool: PgPool  # the test's own pool (not the replica's)
    people: dict[UUID, Person] = field(default_factory=dict)

    @property
    def redis(self) -> Redis:
        return self.replica.redis

    def check_runtime(self) -> None:
        """Fail if the runtime stopped (it only stops by failing)."""
        if self.runtime_task.done():
            error = None if self.runtime_task.cancelled() else self.runtime_task.exception()
            pytest.fail(f"the accounts runtime stopped: {error!r}")

    def control(self, provider: str) -> Any:
        """The emulator's in-process control object."""
        return self.world.google.control if provider == "google" else self.world.microsoft.control

    async def add_person(self, provider: Provider, email: str) -> Person:
        """A user in its emulator and the connected account for it (credentials stored)."""
        refresh_token = f"1//e2e-{secrets.token_urlsafe(18)}"
        self.control(provider).add_user(email, CLIENT_ID, refresh_token=refresh_token)
        shards = self.replica.settings.shard_count
        account = await create_account(
            self.pool, provider=provider, external_user_id=email, shard_count=shards
        )
        await store_credentials(
            self.pool, self.keyring, account.id, Credentials(account.id, refresh_token)
        )
        person = Person(account.id, provider, email, account.shard)
        self.people[account.id] = person
        return person

    async def watching(self) -> bool:
        """Every account synced its calendars and has a push channel."""
        self.check_runtime()
        synced = await self.pool.fetchval(
            "SELECT count(DISTINCT account_id) FROM calendars"
            " WHERE delta_token IS NOT NULL AND account_id = ANY($1::uuid[])",
            list(self.people),
        )
        watched = await self.pool.fetchval(
            "SELECT count(DISTINCT account_id) FROM push_channels"
            " WHERE account_id = ANY($1::uuid[])",
            list(self.people),
        )
        return int(synced) == int(watched) == len(self.people)

    # -- state on both sides ------------------------------------------------------------------

    async def stored(self, person: Person) -> State:
        """The account as ``integration-worker events export`` prints it, plus each etag."""
        etags = {
            (r["calendar_id"], r["id"]): r["etag"]
            for r in await self.pool.fetch(
                "SELECT calendar_id, id, etag FROM events WHERE account_id = $1",
                person.account_id,
            )
        }
        out: State = {}
        for row in await export_events(self.pool, person.account_id):
            line = export_line(person.provider, person.account_id, row)
            key = (line["calendar_id"], line["event_id"])
            out[key] = {**line, "etag": etags[key]}
        return out

    async def windows(self, person: Person) -> dict[str, tuple[datetime, datetime]]:
        """Each followed calendar's sync window, as stored."""
        rows = await self.pool.fetch(
            "SELECT id, window_start, window_end FROM calendars WHERE account_id = $1"
            " AND sync_enabled AND removed_at IS NULL AND window_start IS NOT NULL",
            person.account_id,
        )
        return {r["id"]: (r["window_start"], r["window_end"]) for r in rows}

    def exported(self, person: Person, windows: Mapping[str, tuple[datetime, datetime]]) -> State:
        """The emulator's own export of the account's calendars over the given windows, in the
        same shape as ``stored`` (a Graph default calendar is labelled as our client names it)."""
        control = self.control(person.provider)
        out: State = {}
        for calendar_id, window in windows.items():
            if person.provider == "google":
                rows = control.export(calendar_id, window)
            else:
                graph_id = None if calendar_id == GRAPH_DEFAULT else calendar_id
                rows = control.export(person.email, window, graph_id)
            for row in rows:
                line = {
                    "provider": person.provider,
                    "account": str(person.account_id),
                    **row,
                    "calendar_id": calendar_id,
                }
                out[(calendar_id, row["event_id"])] = line
        return out

    def emulator_calendars(self, person: Person) -> set[str]:
        """The calendars the account's user has at the provider, as our client names them."""
        if person.provider == "google":
            return set(self.world.google.control._store.user_calendars[person.email])
        return {GRAPH_DEFAULT}  # other Graph calendars are listed but not synced (not_synced)

    async def differences(self) -> list[str]:
        """Per account, what differs between Postgres and the emulator's own export."""
        problems: list[str] = []
        for person in self.people.values():
            windows = await self.windows(person)
            if set(windows) != self.emulator_calendars(person):
                problems.append(f"{person.email}: calendars {sorted(windows)}")
                continue
            stored, exported = await self.stored(person), self.exported(person, windows)
            for key in sorted(stored.keys() | exported.keys()):
                if stored.get(key) != exported.get(key):
                    problems.append(
                        f"{person.email} {key}: db={stored.get(key)} emulator={exported.get(key)}"
                    )
        return problems

    # -- quiescence ---------------------------------------------------------------------------

    async def pending_entries(self) -> dict[str, list[str]]:
        """Stream entries delivered to the replica and not acknowledged, by stream."""
        out: dict[str, list[str]] = {}
        for shard in range(self.replica.settings.shard_count):
            key = notifications_key(shard)
            if not await self.redis.exists(key):
                continue
            with contextlib.suppress(Exception):  # no group yet: nothing pending
                rows = await self.redis.xpending_range(key, NOTIFICATIONS_GROUP, "-", "+", 10_000)
                ids = [_text(r["message_id"]) for r in rows]
                if ids:
                    out[key] = ids
        return out

    async def undelivered(self) -> int:
        """Streams holding entries the replica's group has not read yet."""
        behind = 0
        for shard in range(self.replica.settings.shard_count):
            key = notifications_key(shard)
            if not await self.redis.exists(key):
                continue
            info = await self.redis.xinfo_stream(key)
            groups = await self.redis.xinfo_groups(key)
            last = _text(info["last-generated-id"])
            mine = [g for g in groups if _text(g["name"]) == NOTIFICATIONS_GROUP]
            if not mine or _text(mine[0]["last-delivered-id"]) != last:
                behind += 1
        return behind

    def busy_actors(self) -> list[str]:
        """Actors working, restarting, or with a retry due soon."""
        now = asyncio.get_running_loop().time()
        busy = []
        for snap in self.replica.supervisor.registry.snapshots(now):
            if (
                snap.state in _UNSETTLED
                or snap.mailbox_depth
                or any(left <= HORIZON_S for _, left in snap.deadlines)
            ):
                busy.append(f"{snap.id}:{snap.state}:{snap.status}:{snap.deadlines}")
        return busy

    def deliveries_in_flight(self) -> int:
        """Notifications the emulators are still trying to deliver."""
        google = self.world.google.control.deliveries()
        graph = self.world.microsoft.control.deliveries()
        return sum(1 for d in [*google, *graph] if d["outcome"] == "pending")

    async def settle(self, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
        """Wait until nothing is in flight anywhere and nothing moved for ``quiet_s``: no
        delivery, no unread or unacknowledged stream entry, no busy actor or retry due, every
        change published."""
        deadline = time.monotonic() + timeout_s
        last: tuple[int, ...] | None = None
        quiet_since = time.monotonic()
        reason = ""
        while time.monotonic() < deadline:
            self.check_runtime()
            busy = self.busy_actors()
            pending = await self.pending_entries()
            unpublished = int(
                await self.pool.fetchval("SELECT count(*) FROM changes WHERE published_at IS NULL")
            )
            in_flight = self.deliveries_in_flight()
            behind = await self.undelivered()
            moved = (
                self.gateway.appended,
                self.gateway.requests,
                int(await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM changes")),
            )
            reason = f"busy={busy} pending={pending} unpublished={unpublished}"
            reason += f" in_flight={in_flight} behind={behind}"
            if busy or pending or unpublished or in_flight or behind or moved != last:
                last, quiet_since = moved, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"no quiescence within {timeout_s}s: {reason}")

    def sync_everyone(self) -> None:
        """What an operator does after an outage: a ``sync-now`` to every account actor."""
        for person in self.people.values():
            self.replica.supervisor.post_nowait(str(person.account_id), SyncNow())

    def actor_status(self, person: Person) -> str | None:
        """The account actor's free-form status (``synced``, ``retry in ...``)."""
        cell = self.replica.supervisor.get(str(person.account_id))
        return None if cell is None else cell.status

    def restarts(self, person: Person) -> tuple[int, str | None]:
        """How often the account's actor restarted, and its last error."""
        cell = self.replica.supervisor.get(str(person.account_id))
        assert cell is not None
        return cell.restarts, cell.last_error


@contextlib.asynccontextmanager
async def open_pipeline(
    database_url: str, redis_url: str, pool: PgPool, *, shards: int = 4, replica_id: str = "e2e"
) -> AsyncIterator[Pipeline]:
    """Emulators, gateway, replica and runtime on this test's database and Redis; polling off
    (a poll interval of about 30 years), short retry and restart backoffs."""
    key = generate_key()
    keyring = Keyring("k", {"k": key})
    async with contextlib.AsyncExitStack() as stack:
        world = await stack.enter_async_context(
            open_emulated_providers(CLIENT_ID, secrets.token_urlsafe(16))
        )
        gateway_url, app = await serve_gateway(stack, database_url, redis_url, SCHEMA)
        settings = load_settings(
            database_url=database_url,
            redis_url=redis_url,
            shard_count=shards,
            monitor_enabled=False,
            replica_id=replica_id,
            encryption_keys={"k": base64.urlsafe_b64encode(key).decode()},
            encryption_key_id="k",
            public_base_url=gateway_url,
            restart_max=1000,  # crashes are injected on purpose: never quarantine here
            restart_backoff_initial_s=0.05,
            restart_backoff_max_s=0.2,
            # The default 10 s lease: the chaos test stalls its loop (emulator work in-process),
            # and a short lease would lapse and stop the shards mid-test.
            sync_poll_s=1e9,  # polling off: only notifications (and operators) start syncs
            outbox_poll_s=1e9,  # likewise: only LISTEN/NOTIFY wakes an actor for its outbox
            sync_retry_initial_s=0.2,
            sync_retry_max_s=1.0,
        )
        urls = ServiceUrls(database_url, redis_url, embedded=False)
        replica = await stack.enter_async_context(open_replica(settings, urls))
        runtime = AccountsRuntime(
            replica,
            world.clients,
            keyring,
            scan_every_s=0.2,
        )
        task = asyncio.get_running_loop().create_task(runtime.run(), name="e2e.runtime")
        stack.push_async_callback(_cancel, task)
        yield Pipeline(world, replica, runtime, task, app[STATS], keyring, pool)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass(frozen=True, slots=True)
class Crash:
    """What ``crash_mid_sync`` did: the backend it terminated and the entries then pending."""

    pid: int
    pending: dict[str, list[str]]


async def crash_mid_sync(
    pipeline: Pipeline,
    person: Person,
    calendar_id: str,
    trigger: Callable[[], None],
    *,
    meanwhile: Callable[[], None] | None = None,
    timeout_s: float = 10.0,
) -> Crash | None:
    """Kill the actor's Postgres connection inside its sync transaction.

    The test locks the calendar's row (``FOR UPDATE``), ``trigger`` makes an edit whose
    notification starts a sync, and the actor's page commit blocks on the lock; ``meanwhile``
    runs then (more edits while the actor is stuck), and the blocked backend is terminated with
    ``pg_terminate_backend``: a real connection failure in the middle of the sync, which the
    actor does not handle (it crashes and the supervisor restarts it). None if no sync blocked
    within ``timeout_s`` (its notification was dropped, say); nothing was crashed then.
    """
    async with pipeline.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.fetchval(
                "SELECT 1 FROM calendars WHERE account_id = $1 AND id = $2 FOR UPDATE",
                person.account_id,
                calendar_id,
            )
            trigger()
            pid = await _blocked_by(conn, timeout_s)
            if pid is None:
                return None
            if meanwhile is not None:
                meanwhile()
                await asyncio.sleep(0.3)  # let those notifications reach the stream and the cell
            pending = await pipeline.pending_entries()
            await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            return Crash(pid, pending)
        finally:
            await tx.rollback()


async def _blocked_by(conn: PgPoolConnection, timeout_s: float) -> int | None:
    """The backend waiting on a lock ``conn`` holds, once there is one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            " LIMIT 1"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def utc_now() -> datetime:
    return datetime.now(UTC)
