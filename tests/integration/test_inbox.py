"""The replica inbox against a real Redis: routing, acknowledgement after commit, trimming,
re-delivery after a crash, and recovery when Redis lost the streams."""

from __future__ import annotations

from redis.asyncio import Redis

from cluster.inbox import Inbox, InboxEntry
from cluster.keys import NOTIFICATIONS_GROUP, notifications_key

ACCOUNT = "3d1f6c2e-0000-4000-8000-000000000001"


async def append(redis: Redis, shard: int, calendar: str, *, account: str = ACCOUNT) -> str:
    fields = {"provider": "google", "account_id": account, "calendar_id": calendar}
    fields |= {"channel_id": "ch", "kind": "changed", "message_number": "7"}
    fields["received_at"] = "2026-11-22T12:00:00+00:00"
    entry_id = await redis.xadd(notifications_key(shard), fields)  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class Recorder:
    """Stands in for the supervisor: records what it routes; refuses unknown accounts."""

    def __init__(self) -> None:
        self.routed: list[InboxEntry] = []
        self.lost: list[int] = []

    def route(self, entry: InboxEntry) -> bool:
        if entry.account_id != ACCOUNT:
            return False
        self.routed.append(entry)
        return True


def inbox(redis: Redis, recorder: Recorder, consumer: str = "replica-a") -> Inbox:
    return Inbox(redis, consumer, recorder.route, recorder.lost.append, block_ms=50)


async def pending(redis: Redis, shard: int) -> int:
    summary = await redis.xpending(notifications_key(shard), NOTIFICATIONS_GROUP)
    return int(summary["pending"])


async def test_entries_stay_pending_until_acknowledged_then_are_trimmed(redis: Redis) -> None:
    recorder = Recorder()
    box = inbox(redis, recorder)
    await box.read_once([3])  # creates the group; nothing yet
    ids = [await append(redis, 3, "cal-1") for _ in range(3)]
    assert await box.read_once([3]) == 3
    assert [e.entry_id for e in recorder.routed] == ids
    assert recorder.routed[0].calendar_id == "cal-1" and recorder.routed[0].kind == "changed"
    assert await pending(redis, 3) == 3  # routed, not yet committed by the actor

    await box.acknowledge([e.ref for e in recorder.routed[:2]])
    assert await pending(redis, 3) == 1
    assert await redis.xlen(notifications_key(3)) == 3  # trimmed by the read loop, not the ack
    await box.trim_acknowledged()
    assert await redis.xlen(notifications_key(3)) == 1  # trimmed below the oldest pending
    await box.acknowledge([recorder.routed[2].ref])
    assert await pending(redis, 3) == 0
    assert box.statistics.acknowledged == 3
    box.trim_every_s = 0.0  # the next read trims what was acknowledged
    box.block_ms = 1
    await box.read_once([3])
    assert await redis.xlen(notifications_key(3)) == 1  # all done: only the last delivered stays


async def test_a_restarted_replica_gets_its_unacknowledged_entries_again(redis: Redis) -> None:
    first = Recorder()
    crashed = inbox(redis, first)
    await crashed.read_once([5])
    ids = [await append(redis, 5, f"cal-{i}") for i in range(250)]  # more than one read's count
    while await crashed.read_once([5]):
        pass
    await crashed.acknowledge([first.routed[0].ref])  # one sync committed before the crash

    second = Recorder()
    restarted = inbox(redis, second)  # same consumer name: the same replica, restarted
    while await restarted.read_once([5]):
        pass
    assert [e.entry_id for e in second.routed] == ids[1:]  # each unacknowledged one, once
    newer = await append(redis, 5, "cal-new")
    await restarted.read_once([5])
    assert second.routed[-1].entry_id == newer


async def test_a_new_owner_adopts_what_the_former_owner_left_pending(redis: Redis) -> None:
    former = Recorder()
    former_box = inbox(redis, former, consumer="replica-a")
    await former_box.read_once([6])
    ids = [await append(redis, 6, f"cal-{i}") for i in range(600)]  # more than one XAUTOCLAIM
    while await former_box.read_once([6]):
        pass
    await former_box.acknowledge([former.routed[0].ref])  # committed before it died
    former_box.forget(6)  # it gave the shard up (or died) with 599 entries pending

    taker = Recorder()
    box = inbox(redis, taker, consumer="replica-b")
    while await box.read_once([6]):
        pass
    assert [e.entry_id for e in taker.routed] == ids[1:]  # each one it left pending, once
    assert box.statistics.adopted == 599
    consumers = await redis.xinfo_consumers(notifications_key(6), NOTIFICATIONS_GROUP)
    by_name = {c["name"].decode(): c["pending"] for c in consumers}
    assert by_name == {"replica-a": 0, "replica-b": 599}


async def test_entries_a_former_owner_read_after_the_handover_are_adopted(redis: Redis) -> None:
    taker = Recorder()
    box = inbox(redis, taker, consumer="replica-b")
    await box.read_once([9])  # the new owner holds shard 9 (nothing in it yet)
    late = [await append(redis, 9, "cal-late") for _ in range(3)]
    former = Recorder()
    lagging = inbox(redis, former, consumer="replica-a")
    for _ in range(3):  # (the first read only sets up) a read still in flight at the old owner
        await lagging.read_once([9])
    lagging.forget(9)
    assert [e.entry_id for e in former.routed] == late  # now pending with the old owner

    box.trim_every_s = 0.0  # the next read checks for strays
    while await box.read_once([9]):
        pass
    assert [e.entry_id for e in taker.routed] == late
    assert box.statistics.adopted == 3


async def test_a_read_in_flight_when_the_shard_is_given_up_routes_nothing(redis: Redis) -> None:
    recorder = Recorder()
    box = inbox(redis, recorder)
    await box.read_once([10])
    entry_id = await append(redis, 10, "cal-1")
    box.forget(10)  # given up while a read (below, as if already in flight) returns its entry
    reply = await redis.xreadgroup(NOTIFICATIONS_GROUP, "replica-a", {notifications_key(10): ">"})
    assert await box._route_all(10, reply[0][1] if isinstance(reply, list) else []) == 0
    assert recorder.routed == []
    assert await pending(redis, 10) == 1  # left for the shard's owner, not acknowledged
    assert entry_id


async def test_entries_for_accounts_not_here_are_acknowledged_at_once(redis: Redis) -> None:
    recorder = Recorder()
    box = inbox(redis, recorder)
    await box.read_once([1])
    await append(redis, 1, "cal-1", account="00000000-0000-4000-8000-000000000099")
    await redis.xadd(notifications_key(1), {"kind": "changed"})  # malformed: no account
    assert await box.read_once([1]) == 0
    assert await pending(redis, 1) == 0
    assert (box.statistics.dropped, box.statistics.malformed) == (1, 1)


async def test_lost_streams_are_recreated_and_their_shard_resynced(redis: Redis) -> None:
    recorder = Recorder()
    box = inbox(redis, recorder)
    await box.read_once([2, 4])
    await redis.flushall()  # Redis came back empty: streams and groups are gone
    assert await box.read_once([2, 4]) == 0
    assert sorted(recorder.lost) == [2, 4]
    assert box.statistics.groups_recreated == 2
    await append(redis, 2, "cal-1")
    assert await box.read_once([2, 4]) == 1
