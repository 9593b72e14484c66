"""Push channels of the account actor end to end: the in-process emulators deliver to a tiny
loopback receiver (it answers Graph's validation handshake and Google's messages), rows land in
real Postgres, and a short ``push_ttl_s`` makes the half-life renewal fire within the test."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from actors.account.messages import ChannelRemoved, SyncNow
from cluster.inbox import InboxEntry
from providers.google import CAPABILITIES as GOOGLE
from providers.microsoft import CAPABILITIES as MICROSOFT
from store.audit import read_audit_snapshot
from store.calendars import get_calendar_state
from store.channels import ChannelRow, get_channel, list_channels
from supervisor.maintenance_audit import AuditPolicy, audit
from tests.integration import test_account_actor
from tests.integration.test_account_actor import SHARD, World, create, email_of, wait_for

world = test_account_actor.world  # the fixture, shared (pytest finds it by this name)


class Receiver:
    """A notification endpoint on loopback: echoes Graph's validationToken, 200 for the rest."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            return web.Response(text=token, content_type="text/plain")
        self.requests.append((request.path, await request.read()))
        return web.Response(status=200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


def with_push(w: World, receiver: Receiver, ttl_s: int) -> None:
    assert w.ctx is not None
    w.ctx = replace(
        w.ctx,
        push_addresses={
            "google": receiver.url + "/google",
            "microsoft": receiver.url + "/microsoft",
        },
        push_ttl_s=ttl_s,
    )


async def rows(w: World, account_id: str) -> list[ChannelRow]:
    return await list_channels(w.pool, uuid.UUID(account_id))


def sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def assert_token_never_stored(w: World, token: str) -> None:
    """No column of push_channels holds the raw token, in any form."""
    for record in await w.pool.fetch("SELECT * FROM push_channels"):
        for value in record.values():
            assert value != token and value != token.encode()
            assert token not in str(value)


async def test_google_channel_opens_then_is_replaced_at_half_life(
    world: World, receiver: Receiver
) -> None:
    with_push(world, receiver, ttl_s=2)
    control: Any = world.google.control
    account_id, cal = await world.add_account("google")
    await world.start(account_id)
    await world.wait_synced(account_id, cal)

    async def opened() -> bool:
        return len(control.channels()) == 1 and len(await rows(world, account_id)) == 1

    await wait_for(opened, "a Google channel and its row")
    channel = control.channels()[0]
    (row,) = await rows(world, account_id)
    assert row.id == channel["id"] and row.calendar_id == cal and row.shard == SHARD
    assert row.resource_id == channel["resourceId"] and row.expires_at is not None
    assert row.token_hash == sha256(channel["token"])
    await assert_token_never_stored(world, channel["token"])
    assert any(path.endswith("/google") for path, _ in receiver.requests)  # the sync message

    async def replaced() -> bool:
        live = control.channels()
        stored = await rows(world, account_id)
        return (
            len(live) == 1
            and live[0]["id"] != channel["id"]
            and [r.id for r in stored] == [live[0]["id"]]
        )

    await wait_for(replaced, "a replacement channel, the old one stopped and its row replaced")
    (new_row,) = await rows(world, account_id)
    new_channel = next(c for c in control.channels() if c["id"] == new_row.id)
    assert new_row.token_hash == sha256(new_channel["token"]) != row.token_hash
    await assert_token_never_stored(world, new_channel["token"])


async def test_graph_subscription_opens_then_is_replaced_with_a_new_secret(
    world: World, receiver: Receiver
) -> None:
    # Before: renewed in place (PATCH), keeping its clientState for the account's lifetime.
    # Now each renewal is a new subscription with a new clientState; the old one is deleted at
    # Graph and its row retired (still accepted by the gateway for Graph's 4-hour horizon).
    with_push(world, receiver, ttl_s=2)
    control: Any = world.microsoft.control
    account_id, cal = await world.add_account("microsoft")
    await world.start(account_id)
    await world.wait_synced(account_id, cal)

    async def opened() -> bool:
        return len(control.subscriptions()) == 1 and len(await rows(world, account_id)) == 1

    await wait_for(opened, "a Graph subscription and its row")
    sub = control.subscriptions()[0]
    (row,) = await rows(world, account_id)
    assert row.id == sub["id"] and row.calendar_id == "primary"
    assert sub["resource"] == "/me/events"
    assert row.token_hash == sha256(sub["clientState"])
    await assert_token_never_stored(world, sub["clientState"])

    async def replaced() -> bool:
        subs = control.subscriptions()
        stored = await rows(world, account_id)
        return (
            len(subs) == 1
            and subs[0]["id"] != sub["id"]
            and len(stored) == 1
            and stored[0].id == subs[0]["id"]
        )

    await wait_for(replaced, "the subscription replaced")
    new = control.subscriptions()[0]
    (new_row,) = await rows(world, account_id)
    assert new["clientState"] != sub["clientState"]
    assert new_row.token_hash == sha256(new["clientState"]) != row.token_hash
    old = await get_channel(world.pool, "microsoft", row.id)
    assert old is not None and old.retired_until is not None
    assert old.retired_until - datetime.now(UTC) > timedelta(hours=3)  # Graph's horizon


async def test_graph_subscription_removed_is_recreated(world: World, receiver: Receiver) -> None:
    with_push(world, receiver, ttl_s=3600)
    control: Any = world.microsoft.control
    account_id, cal = await world.add_account("microsoft")
    await world.start(account_id)
    await world.wait_synced(account_id, cal)

    async def opened() -> bool:
        return len(control.subscriptions()) == 1 and len(await rows(world, account_id)) == 1

    await wait_for(opened, "a Graph subscription and its row")
    old = control.subscriptions()[0]
    control.fire_lifecycle(old["id"], "subscriptionRemoved")

    async def notified() -> bool:
        return any(b"subscriptionRemoved" in body for _, body in receiver.requests)

    await wait_for(notified, "the lifecycle notification")
    # Made while no subscription existed: announced to nobody, found by the sync that follows.
    create("microsoft", control, email_of(control, "microsoft"), "missed", datetime.now(UTC))
    entry = InboxEntry(SHARD, "5-0", account_id, "primary", "removed")
    world.supervisor.post_nowait(account_id, ChannelRemoved("primary"), entry)

    async def recreated() -> bool:
        subs = control.subscriptions()
        stored = await rows(world, account_id)
        return (
            len(subs) == 1
            and subs[0]["id"] != old["id"]
            and [r.id for r in stored] == [subs[0]["id"]]
        )

    await wait_for(recreated, "a new subscription and its row")
    new = control.subscriptions()[0]
    (row,) = await rows(world, account_id)
    assert row.token_hash == sha256(new["clientState"]) != sha256(old["clientState"])

    async def acked() -> bool:
        return any(refs == [entry.ref] for refs, _ in world.acks)

    await wait_for(acked, "the lifecycle entry acknowledged")
    assert "missed" in {title for _, _, title in await world.events(account_id)}


def expiry(sub: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(sub["expirationDateTime"]).replace("Z", "+00:00"))


async def test_google_channel_of_an_unfollowed_calendar_is_stopped(
    world: World, receiver: Receiver
) -> None:
    with_push(world, receiver, ttl_s=3600)
    control: Any = world.google.control
    account_id, primary = await world.add_account("google")
    email = primary  # a Google user's primary calendar id is their email
    team = control.add_calendar(email, "Team")["id"]
    await world.start(account_id)
    await world.wait_synced(account_id, team)

    async def both_open() -> bool:
        live = {c["calendarId"] for c in control.channels()}
        stored = {r.calendar_id for r in await rows(world, account_id)}
        return live == stored == {primary, team}

    await wait_for(both_open, "a channel for each calendar")
    control.unsubscribe(email, team)  # the user drops the calendar from their list
    world.supervisor.post_nowait(account_id, SyncNow(), None)

    async def team_closed() -> bool:
        live = {c["calendarId"] for c in control.channels()}
        stored = {r.calendar_id for r in await rows(world, account_id)}
        return live == stored == {primary}

    await wait_for(team_closed, "the Team channel stopped at Google and its row deleted")


def test_channel_scopes_declared_by_the_providers() -> None:
    # Google: a channel per calendar, ending with it; Graph: one mailbox subscription, keyed
    # to ``primary``, that no calendar's removal ends.
    assert GOOGLE.pushes_calendar("work") and GOOGLE.channels_follow_calendars
    assert MICROSOFT.pushes_calendar("primary") and not MICROSOFT.pushes_calendar("work")
    assert not MICROSOFT.channels_follow_calendars


async def test_a_calendar_google_will_not_watch_is_polled_and_not_flagged(
    world: World, receiver: Receiver
) -> None:
    # Before: events.watch answered pushNotSupportedForRequestedResource, the actor asked
    # again every 15 minutes forever, and the audit and doctor reported no_channel forever.
    with_push(world, receiver, ttl_s=3600)
    assert world.ctx is not None
    world.ctx = replace(world.ctx, unwatched_poll_s=0.3)
    control: Any = world.google.control
    account_id, primary = await world.add_account("google")
    holidays = control.add_calendar(primary, "Holidays")["id"]
    control.refuse_watch(holidays)
    await world.start(account_id)
    await world.wait_synced(account_id, holidays)

    async def refused() -> bool:
        state = await get_calendar_state(world.pool, uuid.UUID(account_id), holidays)
        return state is not None and state.push_refused_at is not None

    await wait_for(refused, "the refusal recorded")
    assert {c["calendarId"] for c in control.channels()} == {primary}
    # Polled at its own cadence: an event appears without any notification for it.
    create("google", control, holidays, "a holiday", datetime.now(UTC) + timedelta(days=3))

    async def polled() -> bool:
        return any(t == "a holiday" for _, _, t in await world.events(account_id))

    await wait_for(polled, "the unwatched calendar polled")
    watches = [c for c in control.calls() if c.path.endswith("/events/watch")]
    assert len([c for c in watches if holidays in c.path]) == 1  # asked once, never again
    # The audit (what doctor reports) finds nothing missing for it.
    policy = AuditPolicy(
        stale_after=timedelta(hours=1),
        push=True,
        renewal_margin=timedelta(minutes=5),
        providers=frozenset({"google"}),
        capabilities={"google": GOOGLE},
    )
    findings = audit(await read_audit_snapshot(world.pool), policy, datetime.now(UTC))
    assert [f for f in findings if f.calendar_id == holidays] == []
