"""The account actor end to end: real Postgres, in-process emulators, real provider clients,
a real supervisor. Time is real here (HTTP to the emulators), so waits poll with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.account import AccountContext, account_spec
from actors.account.messages import Changed, Resume, Resync, SyncNow
from actors.cell import ActorCell, ActorState
from actors.policy import RestartPolicy
from actors.supervisor import Supervisor
from cluster.inbox import InboxEntry
from operations.outbox import OutboxRequestError, enqueue
from providers.interface import CalendarProvider
from providers.models import SyncPage, SyncWindow
from sandbox.emulators.google import GoogleEmulator
from sandbox.emulators.microsoft.server import MicrosoftEmulator
from sandbox.emulators.shared.world import open_emulated_providers
from store.accounts import create_account, get_account
from store.calendars import choose_selection, get_calendar_state
from store.credentials import Credentials, load_credentials, store_credentials
from store.crypto import Keyring
from store.db import PgPool
from store.events import export_events
from store.fencing import take_shard
from store.outbox import get_item
from store.set_aside import list_set_aside
from store.vocabulary import Provider

CLIENT_ID = "iw-test"
CALENDAR = "https://www.googleapis.com/auth/calendar"
SHARD = 0
WAIT_S = 10.0


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``predicate`` until it holds; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FlakyProvider:
    """Delegates to a real provider; runs a hook before a chosen fetch (raise, inject a fault)."""

    def __init__(self, inner: CalendarProvider, on_fetch: dict[int, Callable[[], None]]) -> None:
        self.inner = inner
        self.name = inner.name
        self.on_fetch = on_fetch  # 1-based fetch number -> hook
        self.fetches: list[str | None] = []  # the cursor of every fetch

    async def fetch_sync_page(self, access_token: str, calendar_id: str, **kw: Any) -> SyncPage:
        self.fetches.append(kw.get("cursor"))
        hook = self.on_fetch.pop(len(self.fetches), None)
        if hook is not None:
            hook()
        return await self.inner.fetch_sync_page(access_token, calendar_id, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class World:
    """Everything a test needs: storage, emulators, clients, a supervisor and the acks."""

    pool: PgPool
    keyring: Keyring
    google: GoogleEmulator
    microsoft: MicrosoftEmulator
    clients: dict[str, CalendarProvider]
    supervisor: Supervisor
    acks: list[tuple[list[tuple[int, str]], int]] = field(default_factory=list)
    epochs: dict[int, int] = field(default_factory=dict)
    ctx: AccountContext | None = None

    async def add_account(
        self, provider: Provider, *, scopes: tuple[str, ...] = (), user: str | None = None
    ) -> tuple[str, str]:
        """A user in the emulator and its account in Postgres; (account id, calendar id).
        Google grants ``scopes`` beside the calendar; ``user``: a new refresh token of that
        existing (seeded) user, for an account listed under another e-mail."""
        email = f"u{secrets.token_hex(3)}@example.com"
        control: Any = (self.google if provider == "google" else self.microsoft).control
        if provider == "google":
            granted = control.add_user(user or email, CLIENT_ID, scopes=(CALENDAR, *scopes))
        else:
            granted = control.add_user(user or email, CLIENT_ID)
        account = await create_account(
            self.pool, provider=provider, external_user_id=email, shard_count=1
        )
        creds = Credentials(account.id, refresh_token=granted["refresh_token"])
        await store_credentials(self.pool, self.keyring, account.id, creds)
        if user is None:
            seed(provider, control, email)
        # The Graph client names the default calendar "primary", as Google does.
        calendar = str(granted["calendar_id"]) if provider == "google" else "primary"
        return str(account.id), calendar

    async def start(self, account_id: str) -> ActorCell[Any]:
        assert self.ctx is not None
        return await self.supervisor.start_child(account_id, account_spec(self.ctx))

    async def events(self, account_id: str) -> set[tuple[str, str, str | None]]:
        rows = await export_events(self.pool, uuid.UUID(account_id))
        return {(r["calendar_id"], r["id"], r["title"]) for r in rows if r["status"] != "cancelled"}

    async def provider_view(
        self, provider: str, account_id: str, calendar_id: str
    ) -> set[tuple[str, str, str | None]]:
        """A fresh full sync over the stored window, straight from the emulator."""
        creds = await load_credentials(self.pool, self.keyring, uuid.UUID(account_id))
        state = await get_calendar_state(self.pool, uuid.UUID(account_id), calendar_id)
        assert creds is not None and creds.access_token is not None and state is not None
        assert state.window_start is not None and state.window_end is not None
        window = SyncWindow(state.window_start, state.window_end)
        client = self.clients[provider]
        out: set[tuple[str, str, str | None]] = set()
        cursor: str | None = None
        while True:
            page = await client.fetch_sync_page(
                creds.access_token, calendar_id, window=window, cursor=cursor
            )
            out |= {
                (calendar_id, e.id, e.title) for e in page.upserts if e.status.value != "cancelled"
            }
            for removal in page.removals:
                out = {x for x in out if x[1] != removal.id}
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor

    async def wait_synced(self, account_id: str, calendar_id: str) -> None:
        async def check() -> bool:
            return await self.synced(account_id, calendar_id)

        await wait_for(check, f"calendar {calendar_id} synced")

    async def synced(self, account_id: str, calendar_id: str) -> bool:
        state = await get_calendar_state(self.pool, uuid.UUID(account_id), calendar_id)
        return state is not None and state.delta_token is not None and state.sync_cursor is None


def seed(provider: str, control: Any, email: str) -> None:
    """A few single events and a weekly series around now."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for i in range(3):
        create(provider, control, email, f"single {i}", now + timedelta(days=i, hours=2))
    first = now - timedelta(days=14)
    if provider == "google":
        control.create_event(
            email,
            {
                "summary": "weekly",
                "start": {"dateTime": _wall(first), "timeZone": "UTC"},
                "end": {"dateTime": _wall(first + timedelta(hours=1)), "timeZone": "UTC"},
                "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=8"],
            },
        )
    else:
        control.create_event(
            email,
            {
                "subject": "weekly",
                "start": {"dateTime": _wall(first), "timeZone": "UTC"},
                "end": {"dateTime": _wall(first + timedelta(hours=1)), "timeZone": "UTC"},
                "recurrence": {
                    "pattern": {
                        "type": "weekly",
                        "interval": 1,
                        "daysOfWeek": [first.strftime("%A").lower()],
                    },
                    "range": {
                        "type": "numbered",
                        "startDate": first.date().isoformat(),
                        "numberOfOccurrences": 8,
                    },
                },
            },
        )


def _wall(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def create(provider: str, control: Any, email: str, title: str, start: datetime) -> str:
    end = start + timedelta(minutes=30)
    if provider == "google":
        body = {
            "summary": title,
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": end.isoformat()},
        }
    else:
        body = {
            "subject": title,
            "start": {"dateTime": _wall(start), "timeZone": "UTC"},
            "end": {"dateTime": _wall(end), "timeZone": "UTC"},
        }
    return str(control.create_event(email, body)["id"])


@pytest.fixture
async def world(pool: PgPool, keyring: Keyring) -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        emulated = await stack.enter_async_context(
            open_emulated_providers(CLIENT_ID, secrets.token_urlsafe(16))
        )
        google, microsoft = emulated.google, emulated.microsoft
        policy = RestartPolicy(max_restarts=3, backoff_initial_s=0.01, backoff_max_s=0.05)
        supervisor = await stack.enter_async_context(
            Supervisor(policy=policy, shutdown_timeout_s=2.0)
        )
        w = World(pool, keyring, google, microsoft, emulated.clients, supervisor)
        w.epochs[SHARD] = await take_shard(pool, SHARD, "test-replica")

        async def acknowledge(refs: list[tuple[int, str]]) -> None:
            # Record how many events were committed when the ack came: proves "after commit".
            count = await pool.fetchval("SELECT count(*) FROM events")
            w.acks.append((refs, int(count)))

        w.ctx = AccountContext(
            pool=pool,
            keyring=keyring,
            providers=w.clients,
            epochs=w.epochs,
            acknowledge=acknowledge,
            poll_every_s=3600.0,
            retry_initial_s=0.05,
            retry_max_s=0.2,
        )
        yield w
        await supervisor.shutdown()  # before the emulators and clients go away


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_first_sync_converges_then_follows_changes(world: World, provider: Provider) -> None:
    account_id, cal = await world.add_account(provider)
    cell = await world.start(account_id)
    await world.wait_synced(account_id, cal)
    stored = await world.events(account_id)
    assert stored == await world.provider_view(provider, account_id, cal)
    titles = {title for _, _, title in stored}
    assert {"single 0", "single 1", "single 2", "weekly"} <= titles
    weekly = sorted(i for _, i, t in stored if t == "weekly")
    assert len(weekly) == 8  # every instance of the series, by instance id

    # (b) the user edits: create, rename, delete, cancel one instance of the series.
    control: Any = (world.google if provider == "google" else world.microsoft).control
    singles = {t: i for _, i, t in stored if t and t.startswith("single")}
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    new_id = create(
        provider, control, email_of(control, provider), "brand new", now + timedelta(days=3)
    )
    field_name = "summary" if provider == "google" else "subject"
    control.update_event(email_of(control, provider), singles["single 0"], {field_name: "renamed"})
    control.delete_event(email_of(control, provider), singles["single 1"])
    control.delete_event(email_of(control, provider), weekly[3])
    entries = [InboxEntry(SHARD, f"{n}-0", account_id, cal, "changed") for n in (1, 2)]
    for entry in entries:
        world.supervisor.post_nowait(account_id, Changed(cal), entry)
    await wait_for(_acked(world), "the acknowledgement")
    assert [refs for refs, _ in world.acks] == [[e.ref for e in entries]]
    stored = await world.events(account_id)
    assert world.acks[0][1] >= len(stored)  # the ack came after the commit
    assert stored == await world.provider_view(provider, account_id, cal)
    ids = {i for _, i, _ in stored}
    assert new_id in ids and singles["single 1"] not in ids and weekly[3] not in ids
    assert (cal, singles["single 0"], "renamed") in stored
    assert cell.restarts == 0


def email_of(control: Any, provider: str) -> str:
    """The only user of a per-test emulator."""
    if provider == "google":
        users = [c for c in control._store.user_calendars]
    else:
        users = [u.upn for u in control._dir.users.values()]
    assert len(users) == 1
    return str(users[0])


def _acked(world: World) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(world.acks)

    return check


async def updated_at(world: World, account_id: str) -> dict[str, datetime]:
    rows = await world.pool.fetch(
        "SELECT id, updated_at FROM events WHERE account_id = $1", uuid.UUID(account_id)
    )
    return {r["id"]: r["updated_at"] for r in rows}


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_expired_sync_state_resyncs_without_deleting(
    world: World, provider: Provider
) -> None:
    account_id, cal = await world.add_account(provider)
    await world.start(account_id)
    await world.wait_synced(account_id, cal)
    before = await updated_at(world, account_id)
    round_before = await world.pool.fetchval("SELECT round FROM calendars WHERE id = $1", cal)
    if provider == "google":
        world.google.control.invalidate_sync_tokens(cal)
    else:
        world.microsoft.control.invalidate_delta_tokens(email_of(world.microsoft.control, provider))
    entry = InboxEntry(SHARD, "9-0", account_id, cal, "changed")
    world.supervisor.post_nowait(account_id, Changed(cal), entry)
    await wait_for(_acked(world), "the acknowledgement")
    assert world.acks[0][0] == [entry.ref]
    state = await get_calendar_state(world.pool, uuid.UUID(account_id), cal)
    assert state is not None and state.round == round_before + 1 and not state.full_round
    assert state.delta_token is not None
    # Mark-and-sweep: every unchanged event survived untouched, and nothing was deleted.
    assert await updated_at(world, account_id) == before
    deleted = await world.pool.fetchval("SELECT count(*) FROM changes WHERE kind = 'deleted'")
    assert deleted == 0
    assert await world.events(account_id) == await world.provider_view(provider, account_id, cal)


async def test_a_graph_link_stored_under_another_base_url_resyncs_on_the_configured_one(
    world: World,
) -> None:
    # Before: after IW_MICROSOFT_GRAPH_BASE_URL changed, every stored delta link raised
    # Permanent; the actor crash-looped into quarantine.
    account_id, cal = await world.add_account("microsoft")
    cell = await world.start(account_id)
    await world.wait_synced(account_id, cal)
    foreign = "https://graph.proxy.example/v1.0/me/calendarView/delta?$deltatoken=old"
    await world.pool.execute(
        "UPDATE calendars SET delta_token = $2 WHERE account_id = $1",
        uuid.UUID(account_id),
        foreign,
    )
    entry = InboxEntry(SHARD, "9-0", account_id, cal, "changed")
    world.supervisor.post_nowait(account_id, Changed(cal), entry)
    await wait_for(_acked(world), "the acknowledgement")
    state = await get_calendar_state(world.pool, uuid.UUID(account_id), cal)
    assert state is not None and state.delta_token is not None
    assert not state.delta_token.startswith("https://graph.proxy.example")
    assert cell.restarts == 0 and cell.status != "quarantined"
    assert await world.events(account_id) == await world.provider_view("microsoft", account_id, cal)


async def test_revoked_consent_parks_until_resumed(world: World) -> None:
    account_id, cal = await world.add_account("google")
    cell = await world.start(account_id)
    await world.wait_synced(account_id, cal)
    creds = await load_credentials(world.pool, world.keyring, uuid.UUID(account_id))
    assert creds is not None
    control: Any = world.google.control
    control.revoke_refresh_token(creds.refresh_token)
    control.expire_access_tokens()
    world.supervisor.post_nowait(account_id, SyncNow())

    async def reauth() -> bool:
        account = await get_account(world.pool, uuid.UUID(account_id))
        return account is not None and account.status == "needs_reauth"

    await wait_for(reauth, "status needs_reauth")
    account = await get_account(world.pool, uuid.UUID(account_id))
    assert account is not None and account.last_error
    assert cell.status == "needs_reauth" and cell.restarts == 0
    assert not cell.deadlines  # parked: nothing armed, so no retry loop
    world.supervisor.post_nowait(account_id, SyncNow())  # ignored while parked
    await asyncio.sleep(0.1)
    assert cell.restarts == 0 and cell.state is ActorState.IDLE

    # The user connects again: new credentials, status active, then a resume post.
    email = email_of(control, "google")
    fresh = control.add_user(email, CLIENT_ID)["refresh_token"]
    await store_credentials(
        world.pool, world.keyring, uuid.UUID(account_id), Credentials(uuid.UUID(account_id), fresh)
    )
    await world.pool.execute(
        "UPDATE accounts SET status = 'active' WHERE id = $1", uuid.UUID(account_id)
    )
    create("google", control, email, "after reauth", datetime.now(UTC) + timedelta(days=1))
    world.supervisor.post_nowait(account_id, Resume())

    async def caught_up() -> bool:
        return any(t == "after reauth" for _, _, t in await world.events(account_id))

    await wait_for(caught_up, "sync after resume")
    assert cell.restarts == 0


async def test_stale_epoch_stops_without_writing(world: World) -> None:
    refused: list[int] = []
    assert world.ctx is not None
    world.ctx = replace(world.ctx, on_stale_epoch=refused.append)
    account_id, cal = await world.add_account("google")
    cell = await world.start(account_id)
    await world.wait_synced(account_id, cal)
    before = await world.events(account_id)
    await take_shard(world.pool, SHARD, "another-replica")  # another replica took the shard
    control: Any = world.google.control
    create("google", control, email_of(control, "google"), "late", datetime.now(UTC))
    world.supervisor.post_nowait(
        account_id, Changed(cal), InboxEntry(SHARD, "1-0", account_id, cal, "changed")
    )

    async def stopped() -> bool:
        return cell.state is ActorState.STOPPED or world.supervisor.get(account_id) is None

    await wait_for(stopped, "the actor to stop")
    assert cell.restarts == 0
    assert await world.events(account_id) == before
    assert world.acks == []  # not ours to acknowledge: the new owner syncs and acknowledges
    assert refused == [SHARD]  # the replica is told, so it gives the shard up


@pytest.mark.parametrize("failure", ["crash", "503"])
async def test_failure_mid_round_resumes_from_stored_cursor(world: World, failure: str) -> None:
    """A bug on the second page crashes (restart), a 503 defers (retry); both resume."""
    assert world.ctx is not None
    control: Any = world.google.control
    control.add_fault("page_size", path="*events*", count=None, page_size=2)

    def boom() -> None:
        raise RuntimeError("injected bug")

    def unavailable() -> None:
        control.add_fault("unavailable", path="*events*", count=1)

    flaky = FlakyProvider(world.clients["google"], {2: boom if failure == "crash" else unavailable})
    world.ctx = replace(world.ctx, providers={**world.clients, "google": flaky})
    account_id, cal = await world.add_account("google")
    cell = await world.start(account_id)
    await world.wait_synced(account_id, cal)
    first, second, third = flaky.fetches[:3]
    assert first is None and second is not None and third == second  # resumed from the cursor
    assert len(flaky.fetches) == 7  # 11 events in pages of 2, one fetch retried
    assert cell.restarts == (1 if failure == "crash" else 0)
    assert await world.events(account_id) == await world.provider_view("google", account_id, cal)


async def test_timers_rebase_the_window_and_keep_the_microsoft_token_alive(world: World) -> None:
    assert world.ctx is not None
    world.ctx = replace(
        world.ctx, rebase_every=timedelta(seconds=0.3), token_keepalive=timedelta(seconds=0.3)
    )
    account_id, cal = await world.add_account("microsoft")
    await world.start(account_id)
    await world.wait_synced(account_id, cal)
    first = await get_calendar_state(world.pool, uuid.UUID(account_id), cal)
    refreshed_at = await world.pool.fetchval("SELECT updated_at FROM credentials")
    before = await updated_at(world, account_id)

    async def rebased_and_refreshed() -> bool:
        state = await get_calendar_state(world.pool, uuid.UUID(account_id), cal)
        touched = await world.pool.fetchval("SELECT updated_at FROM credentials")
        assert state is not None and first is not None and first.window_start is not None
        return (
            state.round > first.round
            and not state.full_round
            and state.window_start is not None
            and state.window_start > first.window_start
            and touched > refreshed_at
        )

    await wait_for(rebased_and_refreshed, "a window rebase and a keep-alive refresh")
    assert await updated_at(world, account_id) == before  # the new round changed nothing


# --- who the account is --------------------------------------------------------------------

EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"


async def subject_of(world: World, account_id: str) -> str | None:
    account = await get_account(world.pool, uuid.UUID(account_id))
    assert account is not None
    return account.subject


@pytest.mark.parametrize(
    ("provider", "scopes", "learned"),
    [
        ("google", ("openid",), "the refresh's id_token"),
        ("google", (EMAIL_SCOPE,), "tokeninfo"),
        ("google", (), "nothing: the calendar scope alone names nobody"),
        ("microsoft", (), "the refresh's id_token"),
    ],
)
async def test_an_account_added_by_refresh_token_learns_its_subject_at_its_first_refresh(
    world: World, provider: Provider, scopes: tuple[str, ...], learned: str
) -> None:
    # Before: such accounts stayed unbound until their user went through the connect flow.
    account_id, cal = await world.add_account(provider, scopes=scopes)
    assert await subject_of(world, account_id) is None
    await world.start(account_id)
    await world.wait_synced(account_id, cal)
    subject = await subject_of(world, account_id)
    if learned.startswith("nothing"):
        assert subject is None
    elif provider == "microsoft":
        user = next(iter(world.microsoft.control._dir.users.values()))
        assert subject == f"{user.tenant_id}:{user.id}"
    else:
        assert subject is not None and subject.isdigit()


async def test_another_users_credentials_never_sync_into_a_bound_account(world: World) -> None:
    account_id, cal = await world.add_account("google", scopes=("openid",))
    await world.pool.execute(
        "UPDATE accounts SET subject = 'someone-else' WHERE id = $1", uuid.UUID(account_id)
    )
    cell = await world.start(account_id)

    async def refused() -> bool:
        account = await get_account(world.pool, uuid.UUID(account_id))
        return account is not None and account.status == "needs_reauth"

    await wait_for(refused, "the account to need re-authorization")
    account = await get_account(world.pool, uuid.UUID(account_id))
    assert account is not None and account.subject == "someone-else"
    assert account.last_error is not None and "another user" in account.last_error
    creds = await load_credentials(world.pool, world.keyring, uuid.UUID(account_id))
    assert creds is not None and creds.access_token is None  # the grant was not kept
    assert await world.events(account_id) == set()
    assert cell.status == "needs_reauth"
    assert await get_calendar_state(world.pool, uuid.UUID(account_id), cal) is None


async def test_a_user_added_twice_keeps_the_first_binding(world: World) -> None:
    first_id, cal = await world.add_account("google", scopes=("openid",))
    await world.start(first_id)
    await world.wait_synced(first_id, cal)
    subject = await subject_of(world, first_id)
    assert subject is not None
    first = await get_account(world.pool, uuid.UUID(first_id))
    assert first is not None
    user = first.external_user_id
    second_id, _ = await world.add_account("google", scopes=("openid",), user=user)
    await world.start(second_id)
    await world.wait_synced(second_id, cal)  # it syncs, as it did before
    assert await subject_of(world, second_id) is None  # but is never bound to the same user
    assert await subject_of(world, first_id) == subject


# --- one bad item --------------------------------------------------------------------------

EVENTS_PATHS = {"google": "/calendar/v3/calendars/*/events", "microsoft": "*/calendarView/delta"}


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_one_bad_item_never_stalls_an_account(world: World, provider: Provider) -> None:
    # Before: a U+0000 in one title failed every commit of its page (Postgres refuses it in
    # text and jsonb) and the account was quarantined; an item off the documented shape failed
    # its whole page as transient, forever.
    account_id, cal = await world.add_account(provider)
    control: Any = (world.google if provider == "google" else world.microsoft).control
    stored = await get_account(world.pool, uuid.UUID(account_id))
    assert stored is not None
    email = stored.external_user_id
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    create(provider, control, email, "agenda\x00 with a NUL", soon)
    control.add_fault("malformed_item", path=EVENTS_PATHS[provider], count=1)
    cell = await world.start(account_id)
    await world.wait_synced(account_id, cal)
    aside = await list_set_aside(world.pool, uuid.UUID(account_id))
    assert [(row.calendar_id, row.attempts) for row in aside] == [(cal, 1)]
    assert "start" in aside[0].reason
    state = await get_calendar_state(world.pool, uuid.UUID(account_id), cal)
    assert state is not None and state.set_aside == 1
    # The rest of the calendar converged: everything but the item set aside.
    view = await world.provider_view(provider, account_id, cal)
    assert await world.events(account_id) == {e for e in view if e[1] != aside[0].item_id}
    assert cell.restarts == 0
    account = await get_account(world.pool, uuid.UUID(account_id))
    assert account is not None and account.status == "active"

    # A full round (what `accounts retry-set-aside` asks for) reads it again: it syncs now.
    world.supervisor.post_nowait(account_id, Resync(cal))

    async def cleared() -> bool:
        state = await get_calendar_state(world.pool, uuid.UUID(account_id), cal)
        return state is not None and state.set_aside == 0 and state.delta_token is not None

    await wait_for(cleared, "the item set aside to sync")
    assert await list_set_aside(world.pool, uuid.UUID(account_id)) == []
    assert await world.events(account_id) == await world.provider_view(provider, account_id, cal)
    titles = {title for _, _, title in await world.events(account_id)}
    assert "agenda with a NUL" in titles  # cleaned where it was parsed, and stored


# --- calendars while running ---------------------------------------------------------------


async def test_calendars_added_renamed_and_removed_reach_the_store_within_a_poll(
    world: World,
) -> None:
    # Before: calendars were listed only when an actor started (or on sync-now / resume): one
    # added later was not synced until a restart.
    assert world.ctx is not None
    world.ctx = replace(world.ctx, poll_every_s=0.2, poll_jitter=0.0)
    account_id, primary = await world.add_account("google")
    cell = await world.start(account_id)
    await world.wait_synced(account_id, primary)
    control: Any = world.google.control
    email = email_of(control, "google")
    added = control.add_calendar(email, "Team")["id"]
    create("google", control, added, "team meeting", datetime.now(UTC) + timedelta(days=2))

    async def listed(name: str) -> bool:
        state = await get_calendar_state(world.pool, uuid.UUID(account_id), added)
        return state is not None and state.name == name and state.delta_token is not None

    await wait_for(lambda: listed("Team"), "the added calendar synced")
    assert "team meeting" in {t for c, _, t in await world.events(account_id) if c == added}
    control.rename_calendar(added, "Team (renamed)")
    await wait_for(lambda: listed("Team (renamed)"), "the rename stored")
    control.unsubscribe(email, added)

    async def removed() -> bool:
        state = await get_calendar_state(world.pool, uuid.UUID(account_id), added)
        return state is not None and state.removed_at is not None

    await wait_for(removed, "the removal stored")
    assert cell.restarts == 0


# --- which calendars sync ------------------------------------------------------------------


def _write_to(calendar_id: str, source_id: str) -> dict[str, Any]:
    return {
        "workspace_id": "ws",
        "source_type": "task",
        "source_id": source_id,
        "event_type": "DEADLINE",
        "version": 1,
        "title": "Brief due",
        "start": "2030-01-08",
        "end": "2030-01-09",
        "calendar_id": calendar_id,
    }


async def test_users_choose_which_calendars_sync(world: World) -> None:
    account_id, primary = await world.add_account("google")
    account = uuid.UUID(account_id)
    control: Any = world.google.control
    email = email_of(control, "google")
    soon = datetime.now(UTC) + timedelta(days=2)
    holidays = control.add_calendar(email, "Holidays", access_role="reader")["id"]
    team = control.add_calendar(email, "Team")["id"]
    create("google", control, holidays, "a holiday", soon)
    create("google", control, team, "team sync", soon)
    await world.start(account_id)
    await world.wait_synced(account_id, team)

    async def titles(calendar_id: str) -> set[str | None]:
        return {t for c, _, t in await world.events(account_id) if c == calendar_id}

    # By default the primary and the calendars the user owns or can write to sync; a calendar
    # the user only reads is listed, not synced.
    listed = await get_calendar_state(world.pool, account, holidays)
    assert listed is not None and not listed.is_selected and listed.delta_token is None
    assert await titles(holidays) == set() and await titles(team) == {"team sync"}

    # Selected: it syncs in full.
    await choose_selection(world.pool, account, holidays, True)
    world.supervisor.post_nowait(account_id, SyncNow())

    async def holidays_synced() -> bool:
        return await titles(holidays) == {"a holiday"}

    await wait_for(holidays_synced, "the selected calendar synced")

    # Deselected: its events go (a deleted change each), its pending writes are given up, and
    # new ones are refused; its state goes, so selecting it again syncs it in full.
    pending = await enqueue(world.pool, account_id, "UPSERT_EVENT", _write_to(team, "t-1"))
    await choose_selection(world.pool, account, team, False)
    world.supervisor.post_nowait(account_id, SyncNow())

    async def team_gone() -> bool:
        return await titles(team) == set()

    await wait_for(team_gone, "the deselected calendar's events removed")
    reasons = await world.pool.fetch(
        "SELECT reason FROM changes WHERE calendar_id = $1 AND kind = 'deleted'", team
    )
    assert [r["reason"] for r in reasons] == ["calendar_deselected"]
    item = await get_item(world.pool, pending)
    assert item is not None and item.state.value == "dead_letter"
    assert item.last_error == "calendar deselected"
    with pytest.raises(OutboxRequestError, match="deselected"):
        await enqueue(world.pool, account_id, "UPSERT_EVENT", _write_to(team, "t-2"))
    state = await get_calendar_state(world.pool, account, team)
    assert state is not None and state.delta_token is None and state.window_start is None

    await choose_selection(world.pool, account, team, None)  # back to the default: owned
    world.supervisor.post_nowait(account_id, SyncNow())

    async def team_back() -> bool:
        return await titles(team) == {"team sync"}

    await wait_for(team_back, "the reselected calendar synced in full")
    assert await titles(primary) == {f"single {i}" for i in range(3)} | {"weekly"}
