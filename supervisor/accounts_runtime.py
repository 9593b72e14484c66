"""A replica's accounts: takes its shards' epochs, runs one actor per active account, routes the
shard streams to the actors, relays the change feed, and follows accounts added or changed.

Invariants:
- shards come and go with the replica's ``ShardKeeper`` (leases in Redis, epochs in Postgres):
  actors run only for accounts of shards it owns; taking a shard wakes the scan, which starts
  their actors in paced batches; giving one up stops its actors before the lease is released;
  a write refused for a stale epoch tells the keeper, which gives the shard up;
- an account runs only when its provider is configured; others are logged once and skipped;
- an inbox entry goes to its account's actor as a post keyed by (kind, calendar), so a burst
  costs one sync; it is acknowledged by the actor after the commit that covers it;
- when a shard's stream was lost (Redis came back empty), every account of that shard syncs;
- accounts added, re-activated or disabled while running are picked up by a periodic scan;
- an outbox insert wakes its account's actor through LISTEN/NOTIFY (a dedicated connection);
  a poll of the accounts running here, run at once after every (re)connect of the listener,
  covers notifications missed while it was down;
- the maintenance scheduler runs in every replica; only the maintenance lease's holder runs the
  daily cleanup and the hourly audit (``supervisor.maintenance``), and a clean stop releases it;
- the scan, the inbox and the relay each restart after a Postgres or Redis outage
  (``run_resilient``) instead of ending the replica;
- after a scan started actors, the heap is collected and frozen (``settle_heap``), so full
  collections do not walk the long-lived actors while notifications wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from uuid import UUID

import aiohttp
import anyio
import structlog

from actors.account import AccountActor, AccountContext
from actors.account.context import Preloaded
from actors.account.messages import OutboxDue, Resume, SyncNow, message_of
from actors.cell import ActorCell, ActorState
from actors.errors import ActorUnavailable
from actors.spec import ChildSpec
from actors.supervisor import Supervisor
from cluster.change_relay import run_relay
from cluster.inbox import Inbox, InboxEntry
from cluster.lease_state import LeasePolicy, StartPacer
from cluster.leases import LeaseStore
from cluster.rate_limit import TokenBucket
from cluster.shard_keeper import ShardKeeper
from cluster.throttle_witness import Budget, ThrottleWitness
from config.settings import Settings
from kinds import KindRegistry, default_registry
from providers.capabilities import BudgetScope
from providers.interface import CalendarProvider
from store.accounts import Account, list_accounts, shard_for
from store.calendars import unwatchable_calendars
from store.channels import list_channels_many
from store.credentials import load_credentials_many
from store.crypto import Keyring
from store.preferences import load_preferences
from supervisor.maintenance import scheduler_from_settings
from supervisor.outbox_wakeups import DueItemsPoll, open_listener, run_outbox_wakeups
from supervisor.replica import Replica
from supervisor.resilient import run_resilient

log = structlog.get_logger("supervisor.accounts")


def providers_from_settings(
    settings: Settings, session: aiohttp.ClientSession, kinds: KindRegistry | None = None
) -> dict[str, CalendarProvider]:
    """A client for every registered kind whose provider is configured, by kind name."""
    registry = default_registry() if kinds is None else kinds
    return registry.clients(settings, session, partial(webhook_url, settings))


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
    """The account side of one running replica (the keeper's ``ShardOwner``)."""

    replica: Replica
    providers: Mapping[str, CalendarProvider]
    keyring: Keyring
    scan_every_s: float = 10.0
    keeper: ShardKeeper | None = None
    inbox: Inbox | None = None
    kinds: KindRegistry = field(default_factory=default_registry)
    _specs: dict[str, ChildSpec[object]] = field(default_factory=dict)  # by kind, when run
    _by_shard: dict[int, set[str]] = field(default_factory=dict)
    _skipped: set[str] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _buckets: dict[str, Budget] = field(default_factory=dict)
    _pacer: StartPacer | None = None
    _started: set[int] = field(default_factory=set)  # owned shards whose actors all started
    _wanted: set[str] = field(default_factory=set)  # accounts whose actors should run (last scan)
    _preloaded: dict[str, Preloaded] = field(default_factory=dict)  # the context's, see _preload

    @property
    def supervisor(self) -> Supervisor:
        """The replica's actor supervisor."""
        return self.replica.supervisor

    def owned(self) -> list[int]:
        """The shards whose actors run here now."""
        return [] if self.keeper is None else self.keeper.owned()

    async def run(self) -> None:
        """Keep a share of the shards, run their actors, and serve until cancelled; on the way
        out, stop the actors and release the leases so other replicas take over at once."""
        settings, pool, redis = self.replica.settings, self.replica.pool, self.replica.redis
        policy = LeasePolicy(ttl_s=settings.lease_ttl_s)
        lease_redis = self.replica.lease_redis or redis
        store = LeaseStore(lease_redis, settings.replica_id, ttl_s=settings.lease_ttl_s)
        control_pool = self.replica.control_pool or pool
        keeper = self.keeper = ShardKeeper(
            store, control_pool, self, settings.shard_count, policy=policy
        )
        inbox = self.inbox = Inbox(redis, settings.replica_id, self._route, self._lost)
        context = AccountContext(
            pool,
            self.keyring,
            self.providers,
            keeper.epochs,
            inbox.acknowledge,
            window_back=timedelta(days=settings.sync_window_back_days),
            window_ahead=timedelta(days=settings.sync_window_ahead_days),
            rebase_every=timedelta(days=settings.sync_rebase_days),
            poll_every_s=settings.sync_poll_s,
            retry_initial_s=settings.sync_retry_initial_s,
            retry_max_s=settings.sync_retry_max_s,
            rate_penalty_max_s=settings.rate_penalty_max_s,
            retry_after_max_s=settings.retry_after_max_s,
            push_addresses=self._push_addresses(),
            retired_grace_s=settings.push_retired_grace_s,
            unwatched_poll_s=settings.sync_unwatched_poll_s,
            capabilities={kind.name: kind.capabilities for kind in self.kinds},
            rate_gate=self._rate_gate,
            on_stale_epoch=keeper.epoch_refused,
            preloaded=self._preloaded,
            sync_slots=asyncio.Semaphore(settings.sync_concurrency),
            outbox_max_attempts=settings.outbox_max_attempts,
        )
        # One child spec per kind this replica runs (the registry says which actor).
        self._specs = {
            kind.name: kind.spec(context) for kind in self.kinds if kind.name in self.providers
        }
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "accounts.shards": keeper.run,
            "accounts.scan": self._scan_forever,
            "accounts.inbox": partial(inbox.run, self.owned),
            "accounts.relay": partial(run_relay, pool, redis),
        }
        # Cleanup and audit run once per period across the cluster, by the maintenance lease's
        # holder (docs/maintenance.md); every replica runs the scheduler, one holds the lease.
        maintenance = None
        if settings.maintenance_enabled:
            maintenance = scheduler_from_settings(
                settings, pool, redis, lease_redis=lease_redis, providers=frozenset(self.providers)
            )
            loops["accounts.maintenance"] = maintenance.run
        # Outbox inserts wake their actor at once (LISTEN/NOTIFY); a poll covers what a lost
        # listener missed, and runs at once after every (re)connect of the listener.
        poll = DueItemsPoll(pool, self._running_accounts, self._wake_outbox, settings.outbox_poll_s)
        loops["accounts.outbox_poll"] = poll.run
        if self.replica.database_url is not None:
            connect = partial(open_listener, self.replica.database_url, settings.db_schema)
            loops["accounts.outbox_wakeups"] = partial(
                run_outbox_wakeups, connect, self._wake_outbox, poll.poke
            )
        monitor = self.replica.monitor
        if monitor is not None:  # its account and shard commands work from now on
            monitor.attach_accounts(pool, keeper)
        try:
            async with anyio.create_task_group() as group:
                for name, loop in loops.items():
                    group.start_soon(run_resilient, name, loop, name=name)
        finally:
            if monitor is not None:
                monitor.detach_accounts()
            with anyio.CancelScope(shield=True):
                if maintenance is not None:
                    await maintenance.shutdown()
                await keeper.shutdown()

    async def start_shard(self, shard: int, epoch: int) -> None:
        """The keeper took ``shard``: the scan starts its actors (paced), without delay."""
        self._wake.set()

    async def stop_shard(self, shard: int) -> None:
        """The keeper gives ``shard`` up: stop reading it and stop its actors."""
        self._started.discard(shard)
        if self.inbox is not None:
            self.inbox.forget(shard)
        count = self.replica.settings.shard_count
        doomed = [
            cell.id
            for cell in list(self.supervisor.registry)
            if self._ours(cell) and shard_for(UUID(cell.id), count) == shard
        ]
        # Bounded well inside the lease's stop margin: the keeper renews nothing meanwhile.
        settings = self.replica.settings
        await self.supervisor.stop_children(
            doomed, timeout_s=min(settings.shutdown_timeout_s, settings.lease_ttl_s / 4)
        )

    async def scan(self) -> None:
        """Start actors for active accounts of owned shards; resume or stop the rest."""
        settings = self.replica.settings
        owned = set(self.owned())
        mine = await list_accounts(self.replica.pool, shards=sorted(owned))
        wanted = [a for a in mine if a.status == "active" and self._runnable(a)]
        self._wanted = {str(a.id) for a in wanted}
        new = [a for a in wanted if self.supervisor.get(str(a.id)) is None]
        new.sort(key=lambda account: account.shard)
        # Rebuilt, not accumulated: a purged account must not linger in a shard's resync list.
        self._by_shard = {}
        for account in mine:
            self._by_shard.setdefault(account.shard, set()).add(str(account.id))
        if new:
            await self._start_paced(new, settings.actor_start_burst)
            settle_heap()
        self._report_started()
        kept = {str(a.id) for a in mine}
        for running in list(self.supervisor.registry):
            if self._ours(running) and running.id not in kept:  # purged, or shard gone
                await self.supervisor.stop_child(running.id)
        for account in mine:
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
                cell.post_nowait(Resume())

    async def _start_paced(self, accounts: list[Account], burst: int) -> None:
        """Start actors in batches of ``burst`` at ``actor_start_rate_per_s`` (one pacer for the
        replica's life, across scans), so a replica taking many shards does not stampede
        Postgres or the providers. Each batch's stored state is read in bulk first."""
        if self._pacer is None:
            rate = self.replica.settings.actor_start_rate_per_s
            self._pacer = StartPacer(rate, burst)
        loop = asyncio.get_running_loop()
        for offset in range(0, len(accounts), burst):
            # A shard given up during this scan: its actors must not start.
            owned = set(self.owned())
            batch = [a for a in accounts[offset : offset + burst] if a.shard in owned]
            if not batch:
                continue
            now = loop.time()
            delay = max(self._pacer.take(now) for _ in batch)  # the batch's last slot
            if delay > 0:
                await asyncio.sleep(delay)
            ids = [str(a.id) for a in batch]
            await self._preload(batch)
            failures: dict[str, BaseException] = {}
            try:
                for kind, spec in self._specs.items():
                    of_kind = [str(a.id) for a in batch if a.provider == kind]
                    if of_kind:
                        failures.update(await self.supervisor.start_children(of_kind, spec))
            finally:
                for child_id in ids:
                    self._preloaded.pop(child_id, None)
            for child_id, error in failures.items():
                log.error("account actor did not start", account=child_id, error=str(error))
            self._report_started()

    async def _preload(self, batch: list[Account]) -> None:
        """Read the batch's credentials, channels, preferences and unwatchable calendars (a
        query each) for the actors' first start."""
        ids = [account.id for account in batch]
        pool = self.replica.pool
        credentials = await load_credentials_many(pool, self.keyring, ids)
        channels = await list_channels_many(pool, ids)
        preferences = await load_preferences(pool, ids)
        unwatchable = await unwatchable_calendars(pool, ids)
        for account in batch:
            self._preloaded[str(account.id)] = Preloaded(
                account,
                credentials.get(account.id),
                channels.get(account.id, []),
                preferences.get(account.id),
                unwatchable.get(account.id, ()),
            )

    def _report_started(self) -> None:
        """Log each owned shard whose accounts all have a running actor, once per ownership."""
        for shard in self.owned():
            if shard in self._started:
                continue
            ids = self._by_shard.get(shard, set())
            if all(self.supervisor.get(i) is not None or i not in self._wanted for i in ids):
                self._started.add(shard)
                log.info("shard actors started", shard=shard, actors=len(ids))

    def _running_accounts(self) -> list[UUID]:
        """The accounts whose actors run here (the outbox poll asks only about these)."""
        return [UUID(cell.id) for cell in self.supervisor.registry if self._ours(cell)]

    def _wake_outbox(self, account_id: UUID) -> None:
        """An outbox item of ``account_id`` is due: its actor drains (a burst costs one drain).
        Accounts of other replicas' shards are ignored (NOTIFY reaches every listener)."""
        cell = self.supervisor.get(str(account_id))
        if cell is None or not self._ours(cell):
            return
        with contextlib.suppress(ActorUnavailable):
            cell.post_nowait(OutboxDue())

    def _rate_gate(self, provider: str, account_id: str) -> Budget | None:
        """The kind's request budget: one per provider project, or one per account (Graph's
        mailbox), as its capabilities say (providers.md A.5, B.3). One object per bucket in
        this replica, so its waiters queue locally."""
        kind = self.kinds.get(provider)
        if kind is None:
            return None
        name = kind.budget_key(account_id)
        budget = self._buckets.get(name)
        if budget is None:
            settings = self.replica.settings
            bucket = TokenBucket(self.replica.redis, name, kind.budget(settings))
            shared = kind.capabilities.budget_scope is BudgetScope.APP
            witness = (
                ThrottleWitness(self.replica.redis, name, settings.rate_shared_window_s)
                if shared
                else None
            )
            budget = self._buckets[name] = Budget(
                bucket,
                witness,
                quorum=settings.rate_shared_quorum,
                base_s=settings.rate_shared_penalty_s,
            )
        return budget

    def _push_addresses(self) -> dict[str, str]:
        """Where each pushing kind's notifications arrive (none without a public base URL)."""
        settings = self.replica.settings
        addresses: dict[str, str] = {}
        for kind in self.kinds:
            url = None if kind.webhook_path is None else webhook_url(settings, kind.webhook_path)
            if url is not None:
                addresses[kind.name] = url
        return addresses

    def _ours(self, cell: ActorCell[object]) -> bool:
        """Whether ``cell`` runs an account actor of this runtime (of any kind)."""
        return any(cell.spec is spec for spec in self._specs.values())

    def _runnable(self, account: Account) -> bool:
        if account.provider in self.providers and account.provider in self.kinds:
            return True
        if account.provider not in self._skipped:
            self._skipped.add(account.provider)
            log.warning("provider not configured; its accounts wait", provider=account.provider)
        return False

    async def _scan_forever(self) -> None:
        while True:
            self._wake.clear()
            await self.scan()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.scan_every_s)

    def _route(self, entry: InboxEntry) -> bool:
        try:
            self.supervisor.post_nowait(entry.account_id, message_of(entry), entry)
        except ActorUnavailable:
            return False
        return True

    def _lost(self, shard: int) -> None:
        for account_id in self._by_shard.get(shard, ()):
            cell = self.supervisor.get(account_id)
            if cell is not None and cell.state is not ActorState.QUARANTINED:
                try:
                    cell.post_nowait(SyncNow())
                except ActorUnavailable:
                    continue
