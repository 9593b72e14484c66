"""The demo: sample accounts, one actor each, live status until Ctrl-C.

The demo actors stand in for the account actors of later issues: each rebuilds its state from
PostgreSQL on start (account row and decrypted credentials), "syncs" on a jittered timer, now
and then fails like a flaky provider, and one poisoned account fails every sync, so restarts
and quarantine show in the status line and in the monitor.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TextIO

import anyio
import asyncpg

from actors.actor import Actor
from actors.spec import ChildSpec
from config.settings import Settings
from store.accounts import Provider, create_account, get_account, list_accounts
from store.credentials import Credentials, load_credentials, store_credentials
from store.crypto import Keyring, generate_key
from supervisor.actor_table import summary_line
from supervisor.replica import Replica

POISONED_PREFIX = "poisoned-"


@dataclass(slots=True)
class DemoWorld:
    """What every demo actor shares."""

    pool: asyncpg.Pool
    keyring: Keyring
    sync_every_s: float
    fault_rate: float
    rng: random.Random = field(default_factory=random.Random)
    syncs: int = 0


class DemoAccountActor(Actor[str]):
    """Loads its account from storage and syncs it on a timer."""

    __slots__ = ("poisoned", "world")

    def __init__(self, world: DemoWorld) -> None:
        self.world = world
        self.poisoned = False

    async def on_start(self) -> None:
        account = await get_account(self.world.pool, uuid.UUID(self.id))
        if account is None:
            raise LookupError(f"account {self.id} is gone")
        creds = await load_credentials(self.world.pool, self.world.keyring, account.id)
        if creds is None:
            raise LookupError(f"account {self.id} has no credentials")
        self.poisoned = account.external_user_id.startswith(POISONED_PREFIX)
        self.set_status("waiting")
        self._arm()

    async def on_deadline(self, name: str) -> None:
        world = self.world
        if self.poisoned:
            raise ValueError("provider returned a page this client cannot parse")
        if world.rng.random() < world.fault_rate:
            raise RuntimeError("simulated provider fault (HTTP 500)")
        world.syncs += 1
        self.set_status(f"synced {time.strftime('%H:%M:%S')}")
        self._arm()

    def _arm(self) -> None:
        period = self.world.sync_every_s
        self.set_timer("sync", self.world.rng.uniform(0.5 * period, 1.5 * period))


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
    world = DemoWorld(pool, keyring, sync_every_s=sync_every_s, fault_rate=fault_rate)
    spec: ChildSpec[str] = ChildSpec(factory=lambda _id: DemoAccountActor(world), kind="account")
    active = await list_accounts(pool, statuses=["active"])
    failures = await supervisor.start_children([str(a.id) for a in active], spec)
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
                f" quarantined in db {quarantined}"
            )
            last_syncs = world.syncs
            out.write(f"\r\x1b[2K{line}" if interactive else f"{line}\n")
            out.flush()
    finally:
        if interactive:
            out.write("\n")  # leave the last status line standing
