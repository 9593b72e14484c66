"""Seeding: the demo's accounts in Postgres and their users (with events) in the emulators.

Invariants:
- accounts alternate Google, Microsoft; each has encrypted credentials holding the same refresh
  token its emulator issued, so it starts ``active`` and its actor refreshes for real;
- emails carry a per-run suffix: a configured database may hold an earlier run's accounts, and
  only the accounts created here are edited, faulted, measured and compared;
- seeding happens before the runtime starts, so no actor and no push channel sees it: the
  first full sync of every account is its initial sync.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from config.settings import Settings
from sandbox.demo.people import EmulatedProvider
from store.accounts import create_account
from store.credentials import Credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.vocabulary import Provider


@dataclass(frozen=True, slots=True)
class DemoAccount:
    """One seeded account: its row id, provider and the user's email (or UPN)."""

    id: uuid.UUID
    provider: Provider
    email: str


def demo_keyring(settings: Settings) -> Keyring:
    """The configured keyring, or a throwaway one (the demo's data is throwaway too)."""
    if settings.encryption_keys:
        active, keys = settings.keyring_material()
        return Keyring(active, keys)
    return Keyring("demo", {"demo": generate_key()})


async def seed_accounts(
    pool: PgPool,
    keyring: Keyring,
    sides: Mapping[str, EmulatedProvider],
    *,
    count: int,
    events: int,
    shards: int,
) -> list[DemoAccount]:
    """``count`` accounts, alternating providers, each user seeded with ``events`` events."""
    run = secrets.token_hex(3)
    seeded: list[DemoAccount] = []
    for i in range(count):
        provider: Provider = "google" if i % 2 == 0 else "microsoft"
        email = f"user-{i}-{run}@example.com"
        refresh_token = f"1//demo-{secrets.token_urlsafe(24)}"
        sides[provider].add_user(email, refresh_token, events=events)
        account = await create_account(
            pool, provider=provider, external_user_id=email, shard_count=shards
        )
        await store_credentials(pool, keyring, account.id, Credentials(account.id, refresh_token))
        seeded.append(DemoAccount(account.id, provider, email))
    return seeded
