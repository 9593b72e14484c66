"""Outbound writes through the outbox, end to end: the account actor drains real Postgres rows
into the Google and Microsoft emulators through the real clients; inbound sync then runs
against what it wrote. Time is real (HTTP), so waits poll with a deadline, except where a
writer is driven directly with a fake clock (holds and Retry-After)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.account.calls import AccountCalls
from actors.account.messages import Changed, OutboxDue, Resume
from actors.account.outbound import OutboundWriter
from actors.cell import ActorCell, ActorState
from cluster.inbox import InboxEntry
from outbox.model import Binding, BindingState, EventContent, ItemState, OutboxItem, SourceKey
from outbox.rules import idempotency_key
from providers.google.mapping import event_id_for_key
from providers.interface import CalendarProvider
from providers.models import Event, EventDraft, EventTiming, SyncPage
from store import bindings as bindings_store
from store import outbox as outbox_store
from store.accounts import get_account
from store.credentials import Credentials, load_credentials, store_credentials
from store.events import apply_sync_page
from store.fencing import fenced_transaction
from store.vocabulary import Provider
from tests.integration import test_account_actor
from tests.integration.test_account_actor import CLIENT_ID, SHARD, World, email_of, wait_for

world = test_account_actor.world  # the fixture, shared (pytest finds it by this name)

WORKSPACE = "w1"
COUNTED = ("create_event", "update_event", "delete_event", "get_event", "find_bound_event")
_entry_numbers = itertools.count(100)


class Counting:
    """Delegates to a real client and records the name of every outbound call it makes."""

    def __init__(self, inner: CalendarProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in COUNTED:
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await attr(*args, **kwargs)

        return counted


@dataclass
class Harness:
    """One synced account with a running actor, and what tests ask of it."""

    w: World
    provider: Provider
    account_id: uuid.UUID
    calendar: str  # the stored (synced) calendar id; items target "primary"
    email: str
    counting: Counting
    cell: ActorCell[Any]
    base: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )

    @property
    def control(self) -> Any:
        return self.w.google.control if self.provider == "google" else self.w.microsoft.control

    @property
    def user(self) -> str:
        """How the emulator's control API names the user's calendar."""
        return self.calendar if self.provider == "google" else self.email

    def content(self, title: str, *, days: int = 1, description: str | None = None) -> EventContent:
        start = self.base + timedelta(days=days, hours=3)
        timing = EventTiming(False, start_at=start, end_at=start + timedelta(minutes=45))
        return EventContent(title, timing, description)

    async def upsert(self, source_id: str, version: int, title: str, **kw: Any) -> int:
        return await outbox_store.enqueue_upsert(
            self.w.pool,
            self.account_id,
            source(source_id),
            "primary",
            version=version,
            content=self.content(title, **kw),
        )

    async def cancel(self, source_id: str, version: int) -> int:
        return await outbox_store.enqueue_cancel(
            self.w.pool, self.account_id, source(source_id), "primary", version=version
        )

    async def item(self, item_id: int) -> OutboxItem:
        found = await outbox_store.get_item(self.w.pool, item_id)
        assert found is not None
        return found

    async def drain(self, *ids: int, until: ItemState | None = None) -> list[OutboxItem]:
        """Wake the actor for the outbox; wait until the items left pending (or reach
        ``until``)."""
        self.w.supervisor.post_nowait(str(self.account_id), OutboxDue())

        async def settled() -> bool:
            for item_id in ids:
                state = (await self.item(item_id)).state
                if state is ItemState.PENDING if until is None else state is not until:
                    return False
            return True

        await wait_for(settled, f"items {ids} settled")
        return [await self.item(item_id) for item_id in ids]

    async def binding(self, source_id: str) -> Binding:
        found = await bindings_store.get_binding(self.w.pool, self.account_id, source(source_id))
        assert found is not None
        return found

    def titled(self, title: str) -> list[dict[str, Any]]:
        """The user's live events in the emulator with this title."""
        key = "summary" if self.provider == "google" else "subject"
        return [
            e
            for e in self.control.events(self.user)
            if e.get(key) == title and e.get("status") != "cancelled"
        ]

    def edit(self, event_id: str, title: str) -> None:
        """The user renames an event in the provider's UI."""
        key = "summary" if self.provider == "google" else "subject"
        self.control.update_event(self.user, event_id, {key: title})

    def delete(self, event_id: str) -> None:
        self.control.delete_event(self.user, event_id)

    async def token(self) -> str:
        creds = await load_credentials(self.w.pool, self.w.keyring, self.account_id)
        assert creds is not None and creds.access_token is not None
        return creds.access_token

    async def provider_event(self, event_id: str) -> Event | None:
        client = self.w.clients[self.provider]
        return await client.get_event(await self.token(), "primary", event_id)

    async def sync(self) -> None:
        """An inbound incremental sync of the calendar, as a notification would start it."""
        entry = InboxEntry(
            SHARD, f"{next(_entry_numbers)}-0", str(self.account_id), self.calendar, "changed"
        )
        self.w.supervisor.post_nowait(str(self.account_id), Changed(self.calendar), entry)

        async def acked() -> bool:
            return any(entry.ref in refs for refs, _ in self.w.acks)

        await wait_for(acked, "the inbound sync")

    async def changes(self, event_id: str) -> list[tuple[str, str]]:
        rows = await self.w.pool.fetch(
            "SELECT kind, origin FROM changes WHERE account_id = $1 AND event_id = $2 ORDER BY id",
            self.account_id,
            event_id,
        )
        return [(r["kind"], r["origin"]) for r in rows]

    async def stored_title(self, event_id: str) -> str | None:
        title: str | None = await self.w.pool.fetchval(
            "SELECT title FROM events WHERE account_id = $1 AND id = $2", self.account_id, event_id
        )
        return title

    async def writer(self, clock: Callable[[], datetime]) -> OutboundWriter:
        """An outbound writer driven by the test itself, on ``clock``."""
        assert self.w.ctx is not None
        account = await get_account(self.w.pool, self.account_id)
        creds = await load_credentials(self.w.pool, self.w.keyring, self.account_id)
        assert account is not None and creds is not None
        ctx = replace(self.w.ctx, clock=clock)
        return OutboundWriter(AccountCalls(ctx, account, self.w.epochs[SHARD], creds))


def source(source_id: str) -> SourceKey:
    return SourceKey(WORKSPACE, "task", source_id, "BLOCKER_DEADLINE")


async def start(w: World, provider: Provider, *, retry_s: float = 0.02) -> Harness:
    """A synced account whose failed items back off ``retry_s`` at first (at most 5x that)."""
    assert w.ctx is not None
    account_id, calendar = await w.add_account(provider)
    counting = Counting(w.clients[provider])
    w.ctx = replace(
        w.ctx,
        providers={**w.clients, provider: counting},
        outbox_max_attempts=3,
        outbox_retry_initial_s=retry_s,
        outbox_retry_max_s=retry_s * 5,
    )
    cell = await w.start(account_id)
    await w.wait_synced(account_id, calendar)

    async def idle() -> bool:  # the first sync's own drain has run: calls counted from here
        return cell.state is ActorState.IDLE

    await wait_for(idle, "the actor idle")
    email = email_of(w.google.control if provider == "google" else w.microsoft.control, provider)
    return Harness(w, provider, uuid.UUID(account_id), calendar, email, counting, cell)


PROVIDERS = pytest.mark.parametrize("provider", ["google", "microsoft"])


@PROVIDERS
async def test_upsert_creates_then_a_newer_upsert_updates(world: World, provider: Provider) -> None:
    h = await start(world, provider)
    first = await h.upsert("s1", 1, "Deadline", description="v1")
    assert [i.state for i in await h.drain(first)] == [ItemState.DONE]
    binding = await h.binding("s1")
    assert binding.state is BindingState.LIVE and binding.generation == 0
    assert binding.provider_event_id is not None and binding.applied_version == 1
    [event] = h.titled("Deadline")
    assert event["id"] == binding.provider_event_id
    written = await h.provider_event(binding.provider_event_id)
    assert written is not None and written.binding_id == str(binding.id)
    assert written.timing.start_at == h.content("x").timing.start_at
    # Mirrored as inbound sync stores it, and announced as ours.
    assert await h.stored_title(binding.provider_event_id) == "Deadline"
    assert await h.changes(binding.provider_event_id) == [("created", "outbox")]

    second = await h.upsert("s1", 2, "Deadline moved", days=2)
    await h.drain(second)
    updated = await h.binding("s1")
    assert updated.provider_event_id == binding.provider_event_id and updated.generation == 0
    assert updated.applied_version == 2 and updated.etag != binding.etag
    assert h.titled("Deadline") == [] and len(h.titled("Deadline moved")) == 1
    moved = await h.provider_event(binding.provider_event_id)
    assert moved is not None and moved.timing.start_at == h.content("x", days=2).timing.start_at
    assert h.counting.calls == ["create_event", "update_event"]


@PROVIDERS
async def test_consecutive_upserts_merge_into_one_call(world: World, provider: Provider) -> None:
    h = await start(world, provider)
    ids = [await h.upsert("s1", v, f"title {v}") for v in (1, 2, 3)]
    assert {i.state for i in await h.drain(*ids)} == {ItemState.DONE}
    assert h.counting.calls == ["create_event"]
    assert len(h.titled("title 3")) == 1 and h.titled("title 1") == []
    assert (await h.binding("s1")).applied_version == 3


async def test_stale_versions_are_skipped(world: World) -> None:
    h = await start(world, "google")
    newer = await h.upsert("s1", 5, "v5")
    await h.drain(newer)
    late = await h.upsert("s1", 3, "v3")
    [item] = await h.drain(late)
    assert item.state is ItemState.SKIPPED and item.last_error
    # Within one batch too: a version below one queued before it never reaches the provider.
    queued = await h.upsert("s1", 7, "v7")
    older = await h.upsert("s1", 6, "v6")
    states = [i.state for i in await h.drain(queued, older)]
    assert states == [ItemState.DONE, ItemState.SKIPPED]
    assert h.counting.calls == ["create_event", "update_event"]
    assert len(h.titled("v7")) == 1


@PROVIDERS
async def test_cancel_deletes_and_a_cancel_of_a_gone_event_is_done(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider)
    await h.drain(await h.upsert("s1", 1, "to cancel"), await h.upsert("s2", 1, "user deletes"))
    event_id = (await h.binding("s1")).provider_event_id
    assert event_id is not None
    [item] = await h.drain(await h.cancel("s1", 2))
    assert item.state is ItemState.DONE and h.titled("to cancel") == []
    tombstone = await h.binding("s1")
    assert tombstone.state is BindingState.DELETED and tombstone.applied_version == 2
    assert await h.stored_title(event_id) is None
    assert await h.changes(event_id) == [("created", "outbox"), ("deleted", "outbox")]
    # An upsert older than the cancel arriving late stays stale.
    [late] = await h.drain(await h.upsert("s1", 1, "to cancel"))
    assert late.state is ItemState.SKIPPED and h.titled("to cancel") == []

    gone = (await h.binding("s2")).provider_event_id
    assert gone is not None
    h.delete(gone)
    [item] = await h.drain(await h.cancel("s2", 2))
    assert item.state is ItemState.DONE
    assert (await h.binding("s2")).state is BindingState.DELETED


@PROVIDERS
async def test_upsert_of_an_event_the_user_deleted_recreates_it(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider)
    await h.drain(await h.upsert("s1", 1, "keep me"))
    before = await h.binding("s1")
    assert before.provider_event_id is not None
    h.delete(before.provider_event_id)
    await h.sync()
    # An inbound removal is no proof of deletion: the binding is untouched.
    assert await h.binding("s1") == before
    assert await h.changes(before.provider_event_id) == [
        ("created", "outbox"),
        ("deleted", "provider"),
    ]
    [item] = await h.drain(await h.upsert("s1", 2, "keep me"))
    assert item.state is ItemState.DONE
    after = await h.binding("s1")
    assert after.state is BindingState.LIVE and after.generation == before.generation + 1
    assert after.provider_event_id != before.provider_event_id
    [event] = h.titled("keep me")
    assert event["id"] == after.provider_event_id
    if provider == "google":  # the id derives from (binding, generation)
        key = idempotency_key(after.id, after.generation)
        assert after.provider_event_id == event_id_for_key(key)


@PROVIDERS
async def test_rebuild_all_deletes_and_recreates(world: World, provider: Provider) -> None:
    h = await start(world, provider)
    await h.drain(await h.upsert("a", 1, "rebuild a"), await h.upsert("b", 1, "rebuild b"))
    before = {s: await h.binding(s) for s in ("a", "b")}
    rebuild = await outbox_store.enqueue_rebuild(world.pool, h.account_id, WORKSPACE, "primary")
    [item] = await h.drain(rebuild)
    assert item.state is ItemState.DONE
    for s, old in before.items():
        new = await h.binding(s)
        assert new.generation == old.generation + 1 and new.state is BindingState.LIVE
        assert new.provider_event_id != old.provider_event_id
        assert [e["id"] for e in h.titled(f"rebuild {s}")] == [new.provider_event_id]
        assert old.provider_event_id is not None
        assert await h.stored_title(old.provider_event_id) is None
        assert await h.stored_title(new.provider_event_id or "") == f"rebuild {s}"


FAULTS = {
    ("google", "429"): ("rate_limit_429", "1"),
    ("google", "500"): ("backend_error", None),
    ("microsoft", "429"): ("throttled", "0.2"),
    ("microsoft", "500"): ("server_error", None),
}


@PROVIDERS
@pytest.mark.parametrize("fault", ["429", "500"])
async def test_throttled_or_failing_writes_are_retried_later(
    world: World, provider: Provider, fault: str
) -> None:
    h = await start(world, provider)
    kind, retry_after = FAULTS[(provider, fault)]
    h.control.add_fault(kind, method="POST", path="*events*", count=1, retry_after=retry_after)
    [item] = await h.drain(await h.upsert("s1", 1, "after a fault"))
    assert item.state is ItemState.DONE and item.attempts == 1
    assert item.last_error is not None and fault in item.last_error
    assert h.counting.calls == ["create_event", "find_bound_event", "create_event"]
    assert len(h.titled("after a fault")) == 1


@PROVIDERS
async def test_a_throttled_account_waits_for_retry_after(world: World, provider: Provider) -> None:
    h = await start(world, provider)
    kind, _ = FAULTS[(provider, "429")]
    h.control.add_fault(kind, method="POST", path="*events*", count=1, retry_after="30")
    first = await h.upsert("s1", 1, "throttled")
    other = await h.upsert("s2", 1, "held too")
    now = [datetime.now(UTC) + timedelta(seconds=1)]  # the items are due
    writer = await h.writer(lambda: now[0])
    next_at = await writer.drain()
    assert next_at is not None and next_at >= now[0] + timedelta(seconds=30)
    throttled, held = await h.item(first), await h.item(other)
    assert throttled.state is ItemState.PENDING and throttled.attempts == 1
    assert held.state is ItemState.PENDING and held.attempts == 0  # not tried: account held
    calls = len(h.counting.calls)
    now[0] += timedelta(seconds=10)
    assert await writer.drain() == next_at  # still held: no call
    assert len(h.counting.calls) == calls
    now[0] = next_at + timedelta(seconds=1)
    assert await writer.drain() is None
    assert (await h.item(first)).state is (await h.item(other)).state is ItemState.DONE


@PROVIDERS
async def test_a_drain_answers_when_to_drain_next(world: World, provider: Provider) -> None:
    h = await start(world, provider)
    kind, _ = FAULTS[(provider, "500")]
    h.control.add_fault(kind, method="POST", path="*events*", count=1)
    failing = await h.upsert("s1", 1, "backs off")
    now = [datetime.now(UTC) + timedelta(seconds=1)]  # the item is due
    writer = await h.writer(lambda: now[0])
    next_at = await writer.drain()  # it failed: the drain answers its next attempt
    assert next_at is not None and next_at == (await h.item(failing)).next_attempt_at
    now[0] = next_at + timedelta(seconds=1)
    assert await writer.drain() is None  # written: nothing is pending any more
    assert (await h.item(failing)).state is ItemState.DONE
    assert await writer.drain() is None


async def test_max_attempts_dead_letters_with_the_last_error(world: World) -> None:
    h = await start(world, "microsoft")
    h.control.add_fault("server_error", method="POST", path="*events*", count=None)
    [item] = await h.drain(await h.upsert("s1", 1, "never"), until=ItemState.DEAD_LETTER)
    assert item.attempts == 3 and item.last_error is not None and "500" in item.last_error
    assert "Bearer" not in item.last_error
    h.control.clear_faults()
    assert h.titled("never") == []


@PROVIDERS
async def test_revoked_consent_holds_items_until_reauthorized(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider)
    creds = await load_credentials(world.pool, world.keyring, h.account_id)
    assert creds is not None
    h.control.revoke_refresh_token(creds.refresh_token)
    h.control.expire_access_tokens()
    item_id = await h.upsert("s1", 1, "after reauth")
    world.supervisor.post_nowait(str(h.account_id), OutboxDue())

    async def parked() -> bool:
        account = await get_account(world.pool, h.account_id)
        return account is not None and account.status == "needs_reauth"

    await wait_for(parked, "needs_reauth")
    item = await h.item(item_id)
    assert item.state is ItemState.PENDING and item.attempts == 0
    world.supervisor.post_nowait(str(h.account_id), OutboxDue())  # parked: ignored
    assert h.cell.restarts == 0

    fresh = (
        h.control.add_user(h.email, CLIENT_ID)["refresh_token"]
        if provider == "google"
        else h.control.grant_refresh_token(h.email, CLIENT_ID)
    )
    await store_credentials(
        world.pool, world.keyring, h.account_id, Credentials(h.account_id, fresh)
    )
    await world.pool.execute("UPDATE accounts SET status = 'active' WHERE id = $1", h.account_id)
    world.supervisor.post_nowait(str(h.account_id), Resume())

    async def written() -> bool:
        return (await h.item(item_id)).state is ItemState.DONE

    await wait_for(written, "the held item written after resume")
    assert len(h.titled("after reauth")) == 1 and h.cell.restarts == 0


@PROVIDERS
async def test_a_crash_before_the_create_call_makes_no_duplicate(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider)
    # Committed, then the process died before calling the provider.
    binding = await bindings_store.begin_create(world.pool, h.account_id, source("s1"), "primary")
    [item] = await h.drain(await h.upsert("s1", 1, "once"))
    assert item.state is ItemState.DONE
    assert h.counting.calls == ["find_bound_event", "create_event"]
    [event] = h.titled("once")
    assert (await h.binding("s1")).provider_event_id == event["id"]
    assert (await h.binding("s1")).id == binding.id


@PROVIDERS
async def test_a_crash_after_the_create_call_adopts_the_event(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider)
    binding = await bindings_store.begin_create(world.pool, h.account_id, source("s1"), "primary")
    content = h.content("adopted")
    draft = EventDraft(
        content.title, content.timing, content.description, binding_id=str(binding.id)
    )
    # The create reached the provider, then the process died before recording it.
    made = await world.clients[provider].create_event(
        await h.token(),
        "primary",
        draft,
        idempotency_key=idempotency_key(binding.id, binding.generation),
    )
    [item] = await h.drain(await h.upsert("s1", 1, "adopted"))
    assert item.state is ItemState.DONE
    assert h.counting.calls == ["find_bound_event"]
    assert [e["id"] for e in h.titled("adopted")] == [made.id]
    adopted = await h.binding("s1")
    assert adopted.provider_event_id == made.id and adopted.state is BindingState.LIVE


@PROVIDERS
@pytest.mark.parametrize("policy", ["local_wins", "provider_wins", "record"])
async def test_a_user_edit_meets_the_conflict_policy(
    world: World, provider: Provider, policy: str
) -> None:
    h = await start(world, provider)
    await world.pool.execute(
        "UPDATE accounts SET conflict_policy = $2 WHERE id = $1", h.account_id, policy
    )
    await h.drain(await h.upsert("s1", 1, "ours"))
    event_id = (await h.binding("s1")).provider_event_id
    assert event_id is not None
    h.edit(event_id, "theirs")
    [item] = await h.drain(await h.upsert("s1", 2, "ours again"))
    assert item.state is ItemState.DONE
    binding = await h.binding("s1")
    assert binding.applied_version == 2 and binding.provider_event_id == event_id
    current = await h.provider_event(event_id)
    assert current is not None
    conflicts = await world.pool.fetch(
        "SELECT outbox_id, provider_copy FROM outbox_conflicts WHERE binding_id = $1", binding.id
    )
    if policy == "local_wins":
        assert current.title == "ours again" and conflicts == []
    elif policy == "provider_wins":
        assert current.title == "theirs" and conflicts == []
    else:
        assert current.title == "theirs" and [r["outbox_id"] for r in conflicts] == [item.id]
        assert "theirs" in conflicts[0]["provider_copy"]


@PROVIDERS
async def test_inbound_sync_skips_our_echoes_and_reports_user_edits(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider)
    await h.drain(await h.upsert("s1", 1, "echo"))
    event_id = (await h.binding("s1")).provider_event_id
    assert event_id is not None
    await h.sync()
    await h.drain(await h.upsert("s1", 2, "echo again"))
    await h.sync()
    assert await h.changes(event_id) == [("created", "outbox"), ("updated", "outbox")]
    assert await h.stored_title(event_id) == "echo again"

    h.edit(event_id, "edited by the user")
    await h.sync()
    assert (await h.changes(event_id))[2:] == [("updated", "provider")]
    assert await h.stored_title(event_id) == "edited by the user"

    await h.drain(await h.cancel("s1", 3))
    await h.sync()
    assert (await h.changes(event_id))[3:] == [("deleted", "outbox")]


async def test_an_echo_with_other_raw_but_our_etag_records_no_change(world: World) -> None:
    h = await start(world, "google")
    await h.drain(await h.upsert("s1", 1, "raw differs"))
    binding = await h.binding("s1")
    assert binding.provider_event_id is not None
    ours = await h.provider_event(binding.provider_event_id)
    assert ours is not None and ours.etag == binding.etag
    echo = replace(ours, calendar_id=h.calendar, raw={"id": ours.id, "served": "differently"})
    edit = replace(echo, title="someone else", etag='"other"')
    for event, expected in ((echo, []), (edit, [("updated", "provider")])):
        async with fenced_transaction(world.pool, SHARD, world.epochs[SHARD]) as conn:
            recorded = await apply_sync_page(
                conn, h.account_id, h.calendar, SyncPage((event,), (), delta_token="d")
            )
        assert [(c.kind, c.origin) for c in recorded] == expected
    raw = await world.pool.fetchval(
        "SELECT raw FROM events WHERE id = $1", binding.provider_event_id
    )
    assert "differently" in raw  # the echo's copy was stored all the same


async def _failed_once(h: Harness, item_id: int) -> None:
    """Wake the writer for ``item_id`` and wait until its first attempt failed."""
    h.w.supervisor.post_nowait(str(h.account_id), OutboxDue())

    async def failed() -> bool:
        return (await h.item(item_id)).attempts == 1

    await wait_for(failed, f"item {item_id} failed once")


@PROVIDERS
async def test_a_lost_create_answer_is_adopted_before_the_next_sync(
    world: World, provider: Provider
) -> None:
    # The provider made the event but its answer never arrived whole; the item backs off for
    # a minute, and a sync (the provider's own notification of our event) runs before that.
    h = await start(world, provider, retry_s=60.0)
    h.control.add_fault("malformed_json", method="POST", path="*events*", count=1)
    item_id = await h.upsert("s1", 1, "answer lost")
    await _failed_once(h, item_id)
    [made] = h.titled("answer lost")
    await h.sync()
    assert await h.changes(made["id"]) == [("created", "outbox")]  # not the user's
    binding = await h.binding("s1")
    assert binding.state is BindingState.LIVE and binding.provider_event_id == made["id"]
    assert (await h.item(item_id)).state is ItemState.DONE
    assert h.counting.calls == ["create_event", "find_bound_event"]  # no second create
    assert len(h.titled("answer lost")) == 1


@PROVIDERS
async def test_a_lost_update_answer_is_adopted_before_the_next_sync(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider, retry_s=60.0)
    await h.drain(await h.upsert("s1", 1, "first"))
    event_id = (await h.binding("s1")).provider_event_id
    assert event_id is not None
    h.control.add_fault("malformed_json", method="*", path=f"*{event_id}*", count=1)
    item_id = await h.upsert("s1", 2, "second")
    await _failed_once(h, item_id)
    await h.sync()
    assert await h.changes(event_id) == [("created", "outbox"), ("updated", "outbox")]
    assert (await h.item(item_id)).state is ItemState.DONE
    assert (await h.binding("s1")).applied_version == 2
    assert h.counting.calls[-2:] == ["update_event", "get_event"]


@PROVIDERS
async def test_an_uncertain_write_the_provider_does_not_show_is_retried_not_adopted(
    world: World, provider: Provider
) -> None:
    h = await start(world, provider, retry_s=60.0)
    kind, _ = FAULTS[(provider, "500")]  # refused before anything was made
    h.control.add_fault(kind, method="POST", path="*events*", count=1)
    item_id = await h.upsert("s1", 1, "not made")
    await _failed_once(h, item_id)
    await h.sync()
    item = await h.item(item_id)
    assert item.state is ItemState.PENDING and item.attempts == 1  # left to its own retry
    assert (await h.binding("s1")).state is BindingState.CREATING
    assert h.counting.calls == ["create_event", "find_bound_event"]
    assert h.titled("not made") == []
