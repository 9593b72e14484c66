"""The demo: sample accounts, one actor each, live status until Ctrl-C.

The demo actors stand in for the account actors of a later issue. Each rebuilds its state from
PostgreSQL on start (account row and decrypted credentials) and syncs on a jittered timer.
Every account syncs for real against the in-process Google or Microsoft emulator: it refreshes
its OAuth token (storing each new access token, and a rotated refresh token, encrypted), runs a
full sync over the window and then incremental syncs with the delta token, while simulated
people edit their calendars and the emulators now and then answer 503 (the actor crashes and is
restarted with backoff). One poisoned account fails every sync until it is quarantined, so
restarts and quarantine show in the status line and in the monitor.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

import anyio
import asyncpg

from actors.actor import Actor
from actors.spec import ChildSpec
from config.settings import Settings
from providers.errors import SyncStateExpired, Unauthorized
from providers.interface import CalendarProvider, needs_refresh
from providers.models import SyncWindow
from store.accounts import Provider, create_account, get_account, list_accounts
from store.credentials import Credentials, load_credentials, store_credentials
from store.crypto import Keyring, generate_key
from supervisor.actor_table import summary_line
from supervisor.demo_providers import DemoProviders, open_demo_providers
from supervisor.replica import Replica

POISONED_PREFIX = "poisoned-"
WINDOW_BACK = timedelta(days=30)
WINDOW_AHEAD = timedelta(days=365)


@dataclass(slots=True)
class DemoWorld:
    """What every demo actor shares."""

    pool: asyncpg.Pool
    keyring: Keyring
    providers: DemoProviders
    sync_every_s: float
    fault_rate: float
    rng: random.Random = field(default_factory=random.Random)
    syncs: int = 0
    changes: int = 0  # events created, changed or removed, as seen by incremental syncs
    events: int = 0  # events fetched by full syncs

    def provider(self, name: str) -> CalendarProvider:
        """The client for one provider."""
        return self.providers.sides[name].provider


class DemoAccountActor(Actor[str]):
    """Loads its account from storage and syncs it on a timer."""

    __slots__ = (
        "access_token",
        "creds",
        "delta_token",
        "expires_at",
        "poisoned",
        "provider",
        "world",
    )

    def __init__(self, world: DemoWorld) -> None:
        self.world = world
        self.poisoned = False
        self.provider = ""
        self.creds: Credentials | None = None
        self.access_token: str | None = None
        self.expires_at: datetime | None = None
        self.delta_token: str | None = None

    async def on_start(self) -> None:
        account = await get_account(self.world.pool, uuid.UUID(self.id))
        if account is None:
            raise LookupError(f"account {self.id} is gone")
        creds = await load_credentials(self.world.pool, self.world.keyring, account.id)
        if creds is None:
            raise LookupError(f"account {self.id} has no credentials")
        self.creds = creds
        self.access_token = creds.access_token
        self.expires_at = creds.access_token_expires_at
        self.poisoned = account.external_user_id.startswith(POISONED_PREFIX)
        self.provider = account.provider
        self.set_status("waiting")
        self._arm(first=True)

    async def on_deadline(self, name: str) -> None:
        world = self.world
        if self.poisoned:
            raise ValueError("provider returned a page this client cannot parse")
        await self._sync()
        world.syncs += 1
        self.set_status(f"synced {time.strftime('%H:%M:%S')}")
        self._arm()

    async def _sync(self) -> None:
        """Refresh the token when due, then one full or incremental round, page by page."""
        provider, now = self.world.provider(self.provider), datetime.now(UTC)
        if self.access_token is None or needs_refresh(self.expires_at, now):
            await self._refresh()
        assert self.access_token is not None
        window = SyncWindow(now - WINDOW_BACK, now + WINDOW_AHEAD)
        full = self.delta_token is None
        cursor: str | None = None
        self.set_status("full sync" if full else "syncing")
        try:
            while True:
                page = await provider.fetch_sync_page(
                    self.access_token,
                    "primary",
                    window=window,
                    delta_token=self.delta_token,
                    cursor=cursor,
                )
                seen = len(page.upserts) + len(page.removals)
                if full:
                    self.world.events += seen
                else:
                    self.world.changes += seen
                if page.next_cursor is None:
                    self.delta_token = page.delta_token
                    return
                cursor = page.next_cursor
        except SyncStateExpired:
            self.delta_token = None  # the next round is a full sync
        except Unauthorized:
            self.expires_at = None  # refresh before the next round

    async def _refresh(self) -> None:
        creds = self.creds
        assert creds is not None
        grant = await self.world.provider(self.provider).refresh_access_token(creds.refresh_token)
        self.access_token, self.expires_at = grant.access_token, grant.expires_at
        self.creds = Credentials(
            creds.account_id,
            refresh_token=grant.refresh_token or creds.refresh_token,
            access_token=grant.access_token,
            access_token_expires_at=grant.expires_at,
            scopes=grant.scopes or creds.scopes,
        )
        await store_credentials(self.world.pool, self.world.keyring, creds.account_id, self.creds)

    def _arm(self, *, first: bool = False) -> None:
        period = self.world.sync_every_s
        low = 0.0 if first else 0.5 * period  # first syncs spread over one period
        self.set_timer("sync", self.world.rng.uniform(low, 1.5 * period))


async def seed_accounts(pool: asyncpg.Pool, keyring: Keyring, count: int, shards: int) -> None:
    """Create ``count`` sample accounts with encrypted credentials; one of them poisoned."""
    existing = await list_accounts(pool)
    for i in range(len(existing), count):
        provider: Provider = "google" if i % 2 else "microsoft"
        external = f"{POISONED_PREFIX}{i}" if i == 7 else f"user-{i}@example.com"
        account = await create_account(
            pool, provider=provider, external_user_id=external, shard_count=shards
        )
        creds = Credentials(account.id, refresh_token=f"1//demo-{secrets.token_urlsafe(24)}")
        await store_credentials(pool, keyring, account.id, creds)


def demo_keyring(settings: Settings) -> Keyring:
    """The configured keyring, or a throwaway one (the demo's data is throwaway too)."""
    if settings.encryption_keys:
        active, keys = settings.keyring_material()
        return Keyring(active, keys)
    return Keyring("demo", {"demo": generate_key()})


async def run_demo(
    replica: Replica,
    *,
    accounts: int,
    duration_s: float | None,
    sync_every_s: float = 5.0,
    fault_rate: float = 0.01,
    out: TextIO = sys.stdout,
) -> None:
    """Seed, spawn one actor per active account, print a status line every second."""
    settings, pool, supervisor = replica.settings, replica.pool, replica.supervisor
    keyring = demo_keyring(settings)
    await seed_accounts(pool, keyring, accounts, settings.shard_count)
    rng = random.Random()
    async with open_demo_providers(rng, fault_rate=fault_rate) as providers:
        active = await list_accounts(pool, statuses=["active"])
        for account in active:
            creds = await load_credentials(pool, keyring, account.id)
            if creds is not None:
                side = providers.sides[account.provider]
                side.add_user(account.external_user_id, creds.refresh_token)
        world = DemoWorld(pool, keyring, providers, sync_every_s, fault_rate, rng)
        spec: ChildSpec[str] = ChildSpec(
            factory=lambda _id: DemoAccountActor(world), kind="account"
        )
        try:
            ids = [str(a.id) for a in active]
            await _supervise_demo(replica, world, spec, ids, duration_s=duration_s, out=out)
        finally:
            # The actors use the emulator: stop them before it goes away.
            await supervisor.shutdown()


async def _supervise_demo(
    replica: Replica,
    world: DemoWorld,
    spec: ChildSpec[str],
    ids: list[str],
    *,
    duration_s: float | None,
    out: TextIO,
) -> None:
    settings, pool, supervisor = replica.settings, replica.pool, replica.supervisor
    failures = await supervisor.start_children(ids, spec)
    for child_id, error in failures.items():
        out.write(f"account {child_id} did not start: {error}\n")
    if settings.monitor_enabled:
        out.write(
            f"monitor: telnet {settings.monitor_host} {settings.monitor_port}"
            " (try: actors, actors --state quarantined, actor <id>)\n"
        )
    started = time.monotonic()
    last_syncs = 0
    interactive = out.isatty()
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            await anyio.sleep(1.0)
            stats = supervisor.registry.statistics()
            quarantined = await pool.fetchval(
                "SELECT count(*) FROM accounts WHERE status = 'quarantined'"
            )
            line = (
                f"{summary_line(stats)}; syncs {world.syncs} (+{world.syncs - last_syncs}/s);"
                f" events {world.events} fetched, {world.changes} changes"
                f" ({world.providers.edits} edits); quarantined in db {quarantined}"
            )
            last_syncs = world.syncs
            out.write(f"\r\x1b[2K{line}" if interactive else f"{line}\n")
            out.flush()
    finally:
        if interactive:
            out.write("\n")  # leave the last status line standing
