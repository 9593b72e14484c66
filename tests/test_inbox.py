"""The replica inbox against a real Redis: routing, acknowledgement after commit, trimming,
re-delivery after a crash, and recovery when Redis lost the streams."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.streams import notifications_key
from supervisor.inbox import GROUP, Inbox, InboxEntry

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
    summary = await redis.xpending(notifications_key(shard), GROUP)
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
    consumers = await redis.xinfo_consumers(notifications_key(6), GROUP)
    by_name = {c["name"].decode(): c["pending"] for c in consumers}
    assert by_name == {"replica-a": 0, "replica-b": 599}


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
