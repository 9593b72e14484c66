"""A replica's accounts: takes its shards' epochs, runs one actor per active account, routes the
shard streams to the actors, relays the change feed, and follows accounts added or changed.

Invariants:
- until shard leases exist (a later issue) one replica holds every shard; it takes each shard's
  epoch in Postgres at start, so a replica started later fences this one out;
- an account runs only when its provider is configured; others are logged once and skipped;
- an inbox entry goes to its account's actor as a post keyed by (kind, calendar), so a burst
  costs one sync; it is acknowledged by the actor after the commit that covers it;
- when a shard's stream was lost (Redis came back empty), every account of that shard syncs;
- accounts added, re-activated or disabled while running are picked up by a periodic scan;
- the scan, the inbox and the relay each restart after a Postgres or Redis outage
  (``run_resilient``) instead of ending the replica;
- after a scan started actors, the heap is collected and frozen (``settle_heap``), so full
  collections do not walk the long-lived actors while notifications wait.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import aiohttp
import anyio
import structlog

from actors.account import AccountActor, AccountContext, account_spec
from actors.cell import ActorState
from actors.errors import ActorUnavailable
from actors.spec import ChildSpec
from actors.supervisor import Supervisor
from config.settings import Settings
from providers.google.client import GoogleCalendarProvider
from providers.interface import CalendarProvider
from providers.microsoft.client import MicrosoftCalendarProvider
from store.accounts import Account, list_accounts
from store.change_feed import run_relay
from store.crypto import Keyring
from store.fencing import take_shard
from store.rate_limit import BucketSpec, TokenBucket
from supervisor.inbox import Inbox, InboxEntry
from supervisor.replica import Replica
from supervisor.resilient import run_resilient

log = structlog.get_logger("supervisor.accounts")

# Shared request budgets: Google 10,000 requests/min per project; Graph 10,000 per 10 min per
# app and mailbox. Bursts are a tenth of that, so a stampede cannot spend a whole period at once.
GOOGLE_PROJECT_BUDGET = BucketSpec.per_period(10_000, 60, burst=1_000)
GRAPH_MAILBOX_BUDGET = BucketSpec.per_period(10_000, 600, burst=1_000)

# What an inbox entry's kind asks of the actor (push renewal keys join with the push work).
_POST_KINDS = {"changed": "changed", "resync": "resync", "removed": "resync"}


def providers_from_settings(
    settings: Settings, session: aiohttp.ClientSession
) -> dict[str, CalendarProvider]:
    """A client for every provider whose OAuth client is configured."""
    providers: dict[str, CalendarProvider] = {}
    if settings.google_client_id and settings.google_client_secret:
        providers["google"] = GoogleCalendarProvider.from_settings(settings, session)
    if settings.microsoft_client_id and settings.microsoft_client_secret:
        providers["microsoft"] = MicrosoftCalendarProvider.from_settings(
            settings,
            session,
            lifecycle_notification_url=webhook_url(settings, "microsoft/lifecycle"),
        )
    return providers


def settle_heap() -> None:
    """Collect, then move every surviving object out of the collector's generations.

    Actors, their cells and the clients live as long as the replica; left in the oldest
    generation, each full collection would walk all of them, a pause of tens of milliseconds
    at a thousand actors that lands on whichever notifications are in flight. Called after a
    batch of actors started, so it is rare; the collection first keeps garbage out of it.
    """
    gc.collect()
    gc.freeze()


def webhook_url(settings: Settings, path: str) -> str | None:
    """Where a provider delivers notifications through the gateway, or None without push."""
    base = settings.public_base_url
    return None if base is None else f"{base.rstrip('/')}/webhooks/{path}"


@dataclass(slots=True)
class AccountsRuntime:
    """The account side of one running replica."""

    replica: Replica
    providers: Mapping[str, CalendarProvider]
    keyring: Keyring
    scan_every_s: float = 10.0
    epochs: dict[int, int] = field(default_factory=dict)
    _by_shard: dict[int, set[str]] = field(default_factory=dict)
    _skipped: set[str] = field(default_factory=set)
    inbox: Inbox | None = None

    @property
    def supervisor(self) -> Supervisor:
        """The replica's actor supervisor."""
        return self.replica.supervisor

    async def run(self) -> None:
        """Take the shards, start the actors, and serve until cancelled."""
        settings = self.replica.settings
        async with self.replica.pool.acquire() as conn:
            for shard in range(settings.shard_count):
                self.epochs[shard] = await take_shard(conn, shard, settings.replica_id)
        self.inbox = Inbox(self.replica.redis, settings.replica_id, self._route, self._lost)
        context = AccountContext(
            self.replica.pool,
            self.keyring,
            self.providers,
            self.epochs,
            self.inbox.acknowledge,
            window_back=timedelta(days=settings.sync_window_back_days),
            window_ahead=timedelta(days=settings.sync_window_ahead_days),
            rebase_every=timedelta(days=settings.sync_rebase_days),
            poll_every_s=settings.sync_poll_s,
            retry_initial_s=settings.sync_retry_initial_s,
            retry_max_s=settings.sync_retry_max_s,
            push_address_google=webhook_url(settings, "google"),
            push_address_microsoft=webhook_url(settings, "microsoft"),
            rate_gate=self._rate_gate,
        )
        spec = account_spec(context)
        inbox = self.inbox
        pool, redis = self.replica.pool, self.replica.redis
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "accounts.scan": partial(self._scan_forever, spec),
            "accounts.inbox": partial(inbox.run, self.epochs.keys),
            "accounts.relay": partial(run_relay, pool, redis),
        }
        async with anyio.create_task_group() as group:
            for name, loop in loops.items():
                group.start_soon(run_resilient, name, loop, name=name)

    async def scan(self, spec: ChildSpec[object]) -> None:
        """Start actors for active accounts without one; resume or stop the rest as needed."""
        accounts = await list_accounts(self.replica.pool)
        wanted = [a for a in accounts if a.status == "active" and self._runnable(a)]
        new = [str(a.id) for a in wanted if self.supervisor.get(str(a.id)) is None]
        # Rebuilt, not accumulated: a purged account must not linger in a shard's resync list.
        self._by_shard = {}
        for account in accounts:
            self._by_shard.setdefault(account.shard, set()).add(str(account.id))
        if new:
            failures = await self.supervisor.start_children(new, spec)
            for child_id, error in failures.items():
                log.error("account actor did not start", account=child_id, error=str(error))
            settle_heap()
        listed = {str(a.id) for a in accounts}
        for running in list(self.supervisor.registry):
            if running.spec is spec and running.id not in listed:  # purged while running
                await self.supervisor.stop_child(running.id)
        for account in accounts:
            cell = self.supervisor.get(str(account.id))
            if cell is None:
                continue
            if account.status == "disabled":
                await self.supervisor.stop_child(str(account.id))
            elif (
                account.status == "active"
                and isinstance(cell.actor, AccountActor)
                and cell.actor.parked
            ):
                # New credentials were stored for a parked (needs_reauth) account: resume it.
                cell.post_nowait(("resume", None))

    def _rate_gate(self, provider: str, account_id: str) -> TokenBucket | None:
        """Google: one budget per project; Graph: one per mailbox (providers.md A.5, B.3)."""
        redis = self.replica.redis
        if provider == "google":
            return TokenBucket(redis, "google", GOOGLE_PROJECT_BUDGET)
        if provider == "microsoft":
            return TokenBucket(redis, f"microsoft:mailbox:{account_id}", GRAPH_MAILBOX_BUDGET)
        return None

    def _runnable(self, account: Account) -> bool:
        if account.provider in self.providers:
            return True
        if account.provider not in self._skipped:
            self._skipped.add(account.provider)
            log.warning("provider not configured; its accounts wait", provider=account.provider)
        return False

    async def _scan_forever(self, spec: ChildSpec[object]) -> None:
        while True:
            await self.scan(spec)
            await asyncio.sleep(self.scan_every_s)

    def _route(self, entry: InboxEntry) -> bool:
        kind = _POST_KINDS.get(entry.kind, "changed")
        try:
            self.supervisor.post_nowait(entry.account_id, (kind, entry.calendar_id), entry)
        except ActorUnavailable:
            return False
        return True

    def _lost(self, shard: int) -> None:
        for account_id in self._by_shard.get(shard, ()):
            cell = self.supervisor.get(account_id)
            if cell is not None and cell.state is not ActorState.QUARANTINED:
                try:
                    cell.post_nowait(("sync-now", None))
                except ActorUnavailable:
                    continue
