"""Fault injection: the schedule's faults made real, through the emulators or Postgres.

- ``throttled`` / ``server_error``: an emulator fault rule (429 with Retry-After, or a 5xx) for
  the next events call of that provider; the actor that gets it retries later.
- ``sync_token_expired``: the user's sync tokens are invalidated in the emulator and the user
  edits once more, so the next incremental sync gets 410 and runs a mark-and-sweep full round.
- ``revoked``: the user's stored refresh token is revoked in the emulator (its access tokens
  die with it) and the actor is asked to sync now, as its poll would later: the refresh fails,
  the account goes ``needs_reauth``. After ``reauth_after_s`` the user "re-connects": a new
  refresh token from the emulator is stored and the account set ``active`` by the operator path
  (``add_account``), and the runtime's scan resumes the actor.
- ``crash``: the demo locks the account's calendar rows, asks the actor to sync, and terminates
  the actor's Postgres backend (``pg_terminate_backend``) while it waits for that lock: the
  actor's connection dies mid-transaction, which is no ``ProviderError`` but a crash, so the
  supervisor restarts the actor with backoff from stored state.

Invariants:
- faults only touch the demo's own accounts; a target is a synced, idle, active account not
  waiting for re-authorization, so no fault lands on an account still recovering from another;
- a crash terminates only backends blocked by the demo's own lock (only the target actor
  writes those rows), never the inbox, the relay or the gateway;
- ``injected`` counts faults that were put in place (a crash: one that landed);
- ``settle`` clears every fault rule and re-authorizes every revoked account as soon as it is
  parked, so the finish compares a pipeline that had the chance to converge.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import anyio
import structlog

from actors.account.messages import SyncNow
from actors.cell import ActorState
from actors.errors import ActorUnavailable
from actors.supervisor import Supervisor
from operations.accounts import add_account
from sandbox.demo.people import EmulatedProvider
from sandbox.demo.schedule import PlannedFault
from sandbox.demo.seeding import DemoAccount
from store.accounts import get_account
from store.credentials import load_credentials
from store.crypto import Keyring
from store.db import PgPool

log = structlog.get_logger("sandbox.demo.faults")

CRASH_WAIT_S = 5.0  # for the target actor to block on the demo's lock
NUDGE_EVERY_S = 3.0  # ask a revoked account's actor to sync again until it notices
RETRY_AFTER_S = 1.0
_BLOCKED_BY = "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"


@dataclass(slots=True)
class Revocation:
    """A revoked account waiting to be re-connected by its user."""

    account: DemoAccount
    revoked_at: float  # monotonic
    nudged_at: float


class FaultInjector:
    """Injects planned faults into the running demo and undoes the ones a user would undo."""

    def __init__(
        self,
        pool: PgPool,
        keyring: Keyring,
        supervisor: Supervisor,
        sides: Mapping[str, EmulatedProvider],
        accounts: list[DemoAccount],
        *,
        shard_count: int,
        reauth_after_s: float,
    ) -> None:
        self.pool = pool  # the demo's own: a crash must not use a connection it terminates
        self.keyring = keyring
        self.supervisor = supervisor
        self.sides = sides
        self.accounts = accounts
        self.shard_count = shard_count
        self.reauth_after_s = reauth_after_s
        self.injected: Counter[str] = Counter()
        self.failed = 0  # faults that could not be put in place (no eligible target, ...)
        self.revoked: list[uuid.UUID] = []
        self.reauthorized = 0
        self.waiting: dict[uuid.UUID, Revocation] = {}

    async def run(self, schedule: Iterable[PlannedFault]) -> None:
        """Inject each planned fault at its time; re-connect revoked users in between."""
        started = time.monotonic()
        for planned in schedule:
            while (left := planned.at_s - (time.monotonic() - started)) > 0:
                await self.reauthorize(force=False)
                await anyio.sleep(min(0.25, left))
            await self.inject(planned)
        while True:  # no (more) faults: users still re-connect
            await self.reauthorize(force=False)
            await anyio.sleep(0.25)

    async def inject(self, planned: PlannedFault) -> None:
        """Put one fault in place; a failure to do so is counted, never fatal."""
        try:
            if await self._inject(planned):
                self.injected[planned.kind] += 1
            else:
                self.failed += 1
        except Exception as exc:
            self.failed += 1
            log.warning("fault injection failed", kind=planned.kind, error=repr(exc))

    async def settle(self) -> int:
        """Clear the fault rules and re-connect every revoked user that is parked already;
        the number of revoked accounts still to re-connect."""
        for side in self.sides.values():
            side.clear_faults()
        await self.reauthorize(force=True)
        return len(self.waiting)

    async def reauthorize(self, *, force: bool) -> None:
        """Re-connect revoked users whose account is ``needs_reauth`` (after ``reauth_after_s``
        unless ``force``); nudge the actors that have not noticed their revocation yet."""
        now = time.monotonic()
        for account_id, waiting in list(self.waiting.items()):
            if not force and now - waiting.revoked_at < self.reauth_after_s:
                continue
            row = await get_account(self.pool, account_id)
            if row is None or row.status == "needs_reauth":
                self.waiting.pop(account_id)
                if row is not None:
                    await self._reconnect(waiting.account)
            elif row.status == "active" and now - waiting.nudged_at >= NUDGE_EVERY_S:
                waiting.nudged_at = now
                self._post(account_id, SyncNow())

    async def _inject(self, planned: PlannedFault) -> bool:
        kind, pick = planned.kind, planned.pick
        if kind in ("throttled", "server_error"):
            side = list(self.sides.values())[pick % len(self.sides)]
            if kind == "throttled":
                side.throttle(RETRY_AFTER_S)
            else:
                side.server_error(pick // len(self.sides))
            return True
        targets = self._eligible()
        if not targets:
            return False
        account = targets[pick % len(targets)]
        side = self.sides[account.provider]
        if kind == "sync_token_expired":
            side.expire_sync_state(account.email)
            side.edit(account.email)
            return True
        if kind == "revoked":
            creds = await load_credentials(self.pool, self.keyring, account.id)
            if creds is None:
                return False
            side.revoke(creds.refresh_token)
            now = time.monotonic()
            self.waiting[account.id] = Revocation(account, now, now)
            self.revoked.append(account.id)
            self._post(account.id, SyncNow())
            return True
        return await self._crash(account)

    async def _crash(self, account: DemoAccount) -> bool:
        """Terminate the target actor's backend while it waits for the demo's lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            me = await conn.fetchval("SELECT pg_backend_pid()")
            locked = await conn.fetch(
                "SELECT id FROM calendars WHERE account_id = $1 FOR UPDATE", account.id
            )
            if not locked or not self._post(account.id, SyncNow()):
                return False
            deadline = time.monotonic() + CRASH_WAIT_S
            while time.monotonic() < deadline:  # polled, not cancelled: asyncpg stays sane
                victims = await conn.fetch(_BLOCKED_BY, me)
                for victim in victims:
                    await conn.fetchval("SELECT pg_terminate_backend($1)", victim["pid"])
                if victims:
                    return True
                await anyio.sleep(0.02)
        return False

    async def _reconnect(self, account: DemoAccount) -> None:
        """The user consents again: a new refresh token, stored by the operator path."""
        refresh_token = self.sides[account.provider].reauthorize(account.email)
        await add_account(
            self.pool,
            self.keyring,
            provider=account.provider,
            email=account.email,
            refresh_token=refresh_token,
            shard_count=self.shard_count,
        )
        self.reauthorized += 1

    def _eligible(self) -> list[DemoAccount]:
        """Accounts synced and idle, not waiting for re-authorization."""
        eligible = []
        for account in self.accounts:
            cell = self.supervisor.get(str(account.id))
            if (
                cell is not None
                and account.id not in self.waiting
                and cell.state is ActorState.IDLE
                and cell.status == "synced"
            ):
                eligible.append(account)
        return eligible

    def _post(self, account_id: uuid.UUID, key: Hashable) -> bool:
        try:
            self.supervisor.post_nowait(str(account_id), key)
        except ActorUnavailable:
            return False
        return True
