"""Real replica processes for multi-process tests: ``integration-worker supervise`` N times, one
``integration-worker gateway``, and the Google emulator (in the test process, reached by the
replicas and reaching the gateway over HTTP), all on the test's Postgres database and the
session's Redis.

Each process writes JSON logs at DEBUG to its own file, which the tests parse. Every process is
killed and every file closed by ``Cluster.close`` (``open_cluster`` calls it however the test
ends).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from cluster.keys import lease_key
from cluster.leases import replica_of
from operations.accounts import export_line
from providers.google.mapping import BINDING_PROPERTY
from sandbox.emulators.google import GoogleEmulator
from store.accounts import create_account
from store.credentials import Credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.events import export_events

EXE = os.path.join(os.path.dirname(sys.executable), "integration-worker")
REPLICA = [sys.executable, "-m", "sandbox.replica"]
CLIENT_ID = "iw-cluster-client"
KEY_ID = "k"

# An application's timed upsert request (docs/outbox.md), as it would insert it.
OUTBOX_UPSERT = (
    "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
    " event_type, version, title, all_day, start_at, end_at)"
    " VALUES ($1, 'UPSERT_EVENT', 'ws-1', 'task', $2, 'BLOCKER_DEADLINE', $3, $4, false, $5, $6)"
    " RETURNING id"
)

# (calendar id, event id) -> exported row (etag included): one account's whole state.
State = dict[tuple[str, str], dict[str, Any]]
Record = dict[str, Any]


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0
) -> float:
    """Poll ``predicate`` until true; the monotonic time it was seen true. Fails the test after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """One child process and the file its logs (stderr) go to."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def records(self, event: str | None = None) -> list[Record]:
        """The JSON log records written so far (the event ``event`` only, if given)."""
        return [r for r in read_records(self.log_path) if event is None or r.get("event") == event]

    def send(self, signum: signal.Signals) -> None:
        """Send ``signum`` (SIGSTOP, SIGCONT, ...) without waiting."""
        self.proc.send_signal(signum)

    async def stop(self, signum: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``signum`` and wait for the exit; its exit code."""
        if self.running:
            self.proc.send_signal(signum)
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()

    async def close(self) -> None:
        """Kill (if still running), reap, and close the log file."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot die otherwise
                self.proc.kill()
        await self.proc.wait()
        self.log_file.close()


def read_records(path: Path) -> Iterator[Record]:
    """Each complete JSON line of a log file (a line cut by a kill is skipped)."""
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict):
                yield record


def logged_at(record: Record) -> datetime:
    """A record's timestamp (structlog's ISO 8601, UTC)."""
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Person:
    """A connected Google account: its user in the emulator and its calendar (the primary)."""

    account_id: UUID
    email: str
    shard: int

    @property
    def calendar_id(self) -> str:
        return self.email


@dataclass
class Cluster:
    """The processes of one test and what they share."""

    database_url: str
    redis_url: str
    redis: Redis
    pool: PgPool  # the test's own pool
    log_dir: Path
    emulator: GoogleEmulator
    shards: int
    ttl_s: float
    key: bytes = field(default_factory=generate_key)
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    gateway_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)
    people: dict[UUID, Person] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def keyring(self) -> Keyring:
        return Keyring(KEY_ID, {KEY_ID: self.key})

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every child: this test's services, push through the gateway,
        polling off, the Google emulator, JSON logs at DEBUG."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
        env.update(
            IW_DATABASE_URL=self.database_url,
            IW_REDIS_URL=self.redis_url,
            IW_SHARD_COUNT=str(self.shards),
            IW_LEASE_TTL_S=str(self.ttl_s),
            IW_MONITOR_ENABLED="false",
            IW_LOG_FORMAT="json",
            IW_LOG_LEVEL="DEBUG",
            IW_ENCRYPTION_KEYS=orjson.dumps(
                {KEY_ID: base64.urlsafe_b64encode(self.key).decode()}
            ).decode(),
            IW_ENCRYPTION_KEY_ID=KEY_ID,
            IW_GOOGLE_CLIENT_ID=CLIENT_ID,
            IW_GOOGLE_CLIENT_SECRET=self.client_secret,
            IW_GOOGLE_API_BASE_URL=self.emulator.api_base_url,
            IW_GOOGLE_TOKEN_URI=self.emulator.token_uri,
            IW_PUBLIC_BASE_URL=self.gateway_url,
            IW_GATEWAY_PORT=str(self.gateway_port),
            IW_SYNC_POLL_S="1000000",  # polling off: only notifications start syncs
            IW_SYNC_RETRY_INITIAL_S="0.2",
            IW_SYNC_RETRY_MAX_S="1",
            IW_RESTART_BACKOFF_INITIAL_S="0.05",
            IW_RESTART_BACKOFF_MAX_S="0.2",
            IW_RESTART_MAX="1000",
        )
        env.update(extra)
        return env

    async def spawn(self, name: str, *args: str, **env: str) -> Process:
        """Start ``integration-worker <args>`` with its logs in ``<log_dir>/<name>.log``;
        ``supervise`` runs through ``sandbox.replica``, which adds the fault points
        (``IW_FAULT_*`` in ``env``, see ``sandbox.faults``)."""
        if name in self.processes:
            raise ValueError(f"a process named {name!r} exists")
        path = self.log_dir / f"{name}.log"
        log_file = path.open("wb")
        try:
            command = REPLICA if args[:1] == ("supervise",) else [EXE]
            proc = await asyncio.create_subprocess_exec(
                *command,
                *args,
                env=self.env(**env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        except BaseException:
            log_file.close()
            raise
        process = self.processes[name] = Process(name, proc, path, log_file)
        return process

    async def start_replica(self, replica_id: str, **env: str) -> Process:
        """``integration-worker supervise`` as ``replica_id`` (``env``: more settings, or fault
        points such as ``IW_FAULT_HOLD_FILE``)."""
        return await self.spawn(replica_id, "supervise", **{**env, "IW_REPLICA_ID": replica_id})

    async def start_gateway(self) -> Process:
        """``integration-worker gateway``, once its ops port answers /healthz."""
        ops_port = free_port()
        gateway = await self.spawn("gateway", "gateway", IW_OPS_PORT=str(ops_port))
        async with aiohttp.ClientSession() as http:

            async def listening() -> bool:
                if not gateway.running:
                    pytest.fail(f"the gateway exited: {gateway.log_path.read_text()[-2000:]}")
                try:
                    async with http.get(f"http://127.0.0.1:{ops_port}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(listening, "the gateway to listen")
        return gateway

    def replicas(self) -> dict[str, Process]:
        """The replica processes still running, by id."""
        return {n: p for n, p in self.processes.items() if n != "gateway" and p.running}

    async def close(self) -> None:
        for process in self.processes.values():
            await process.close()

    # -- leases ---------------------------------------------------------------------------

    async def owners(self) -> dict[int, str | None]:
        """Which replica holds each shard's lease now (None: free); as ``LeaseStore.owners``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(self.shards):
                pipe.get(lease_key(shard))
            replies = await pipe.execute()
        return {
            shard: None if reply is None else replica_of(_text(reply))
            for shard, reply in enumerate(replies)
        }

    # -- accounts -------------------------------------------------------------------------

    async def add_person(self, email: str) -> Person:
        """A user in the emulator and its connected account (credentials stored under the
        replicas' key)."""
        refresh_token = f"1//cluster-{secrets.token_urlsafe(18)}"
        self.emulator.control.add_user(email, CLIENT_ID, refresh_token=refresh_token)
        account = await create_account(
            self.pool, provider="google", external_user_id=email, shard_count=self.shards
        )
        await store_credentials(
            self.pool, self.keyring, account.id, Credentials(account.id, refresh_token)
        )
        person = self.people[account.id] = Person(account.id, email, account.shard)
        return person

    async def watching(self, people: Iterable[Person] | None = None) -> bool:
        """Every account (of ``people``) synced its calendars and has a push channel."""
        ids = [p.account_id for p in (self.people.values() if people is None else people)]
        synced = await self.pool.fetchval(
            "SELECT count(DISTINCT account_id) FROM calendars"
            " WHERE delta_token IS NOT NULL AND account_id = ANY($1::uuid[])",
            ids,
        )
        watched = await self.pool.fetchval(
            "SELECT count(DISTINCT account_id) FROM push_channels"
            " WHERE account_id = ANY($1::uuid[])",
            ids,
        )
        return int(synced) == int(watched) == len(ids)

    def create_event(self, person: Person, title: str) -> str:
        """An event made by the user in Google's UI; its id."""
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        body = {
            "summary": title,
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
        }
        return str(self.emulator.control.create_event(person.calendar_id, body)["id"])

    def rename_event(self, person: Person, event_id: str, title: str) -> None:
        self.emulator.control.update_event(person.calendar_id, event_id, {"summary": title})

    async def stored_title(self, person: Person, event_id: str) -> str | None:
        """The event's title in Postgres, or None if it is not there."""
        title = await self.pool.fetchval(
            "SELECT title FROM events WHERE account_id = $1 AND calendar_id = $2 AND id = $3",
            person.account_id,
            person.calendar_id,
            event_id,
        )
        return None if title is None else str(title)

    # -- outbox ---------------------------------------------------------------------------

    async def enqueue_upsert(
        self, person: Person, source_id: str, title: str, *, version: int = 1
    ) -> int:
        """What an application does: insert an upsert (a one-hour event tomorrow, primary
        calendar) in its own transaction; the item's id."""
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        async with self.pool.acquire() as conn, conn.transaction():
            item_id = await conn.fetchval(
                OUTBOX_UPSERT,
                person.account_id,
                source_id,
                version,
                title,
                start,
                start + timedelta(hours=1),
            )
        return int(item_id)

    def bound_events(self, person: Person, binding_id: UUID) -> list[dict[str, Any]]:
        """The emulator's stored events of the person's calendar (cancelled ones included)
        whose private extended property names ``binding_id``."""
        out = []
        for body in self.emulator.control.events(person.calendar_id):
            private = body.get("extendedProperties", {}).get("private", {})
            if private.get(BINDING_PROPERTY) == str(binding_id):
                out.append(body)
        return out

    # -- both sides -----------------------------------------------------------------------

    async def differences(self) -> list[str]:
        """Per account, what differs between Postgres and the emulator's own export of the
        calendars over their stored sync windows."""
        problems: list[str] = []
        for person in self.people.values():
            rows = await self.pool.fetch(
                "SELECT id, window_start, window_end FROM calendars WHERE account_id = $1"
                " AND sync_enabled AND removed_at IS NULL AND window_start IS NOT NULL",
                person.account_id,
            )
            windows = {r["id"]: (r["window_start"], r["window_end"]) for r in rows}
            if set(windows) != {person.calendar_id}:
                problems.append(f"{person.email}: calendars {sorted(windows)}")
                continue
            stored, exported = await self._stored(person), self._exported(person, windows)
            for key in sorted(stored.keys() | exported.keys()):
                if stored.get(key) != exported.get(key):
                    problems.append(
                        f"{person.email} {key}: db={stored.get(key)} emulator={exported.get(key)}"
                    )
        return problems

    async def _stored(self, person: Person) -> State:
        etags = {
            (r["calendar_id"], r["id"]): r["etag"]
            for r in await self.pool.fetch(
                "SELECT calendar_id, id, etag FROM events WHERE account_id = $1",
                person.account_id,
            )
        }
        out: State = {}
        for row in await export_events(self.pool, person.account_id):
            line = export_line("google", person.account_id, row)
            key = (line["calendar_id"], line["event_id"])
            out[key] = {**line, "etag": etags[key]}
        return out

    def _exported(self, person: Person, windows: dict[str, tuple[datetime, datetime]]) -> State:
        out: State = {}
        for calendar_id, window in windows.items():
            for row in self.emulator.control.export(calendar_id, window):
                line = {"provider": "google", "account": str(person.account_id), **row}
                out[(calendar_id, row["event_id"])] = {**line, "calendar_id": calendar_id}
        return out

    def deliveries_pending(self) -> int:
        """Push notifications the emulator is still trying to deliver."""
        return sum(1 for d in self.emulator.control.deliveries() if d["outcome"] == "pending")

    # -- logs -----------------------------------------------------------------------------

    def appended_ids(self) -> set[tuple[str, str]]:
        """(stream, entry id) of every entry the gateway logged as appended."""
        gateway = self.processes["gateway"]
        return {
            (str(r["stream"]), str(r["entry_id"])) for r in gateway.records("notification appended")
        }

    def acknowledged_ids(self) -> set[tuple[str, str]]:
        """(stream, entry id) of every entry some replica logged as acknowledged."""
        out: set[tuple[str, str]] = set()
        for name, process in self.processes.items():
            if name == "gateway":
                continue
            for record in process.records("notifications acknowledged"):
                out.update((str(record["stream"]), str(i)) for i in record["entry_ids"])
        return out


@contextlib.asynccontextmanager
async def open_cluster(
    database_url: str,
    redis_url: str,
    redis: Redis,
    pool: PgPool,
    log_dir: Path,
    *,
    shards: int,
    ttl_s: float,
    gateway: bool = True,
) -> AsyncIterator[Cluster]:
    """The emulator (and the gateway); replicas are started by the test. Everything started
    is stopped on the way out, whatever happened."""
    async with GoogleEmulator("127.0.0.1", 0) as emulator:
        cluster = Cluster(database_url, redis_url, redis, pool, log_dir, emulator, shards, ttl_s)
        emulator.control.add_client(CLIENT_ID, cluster.client_secret)
        try:
            if gateway:
                await cluster.start_gateway()
            yield cluster
        finally:
            await cluster.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
