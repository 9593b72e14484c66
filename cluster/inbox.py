"""A replica's inbox: reads its shards' notification streams and posts each entry to its actor.

Invariants:
- one consumer group (``NOTIFICATIONS_GROUP``) per stream, one consumer per replica (its
  replica id); an entry stays pending until ``acknowledge`` is called for it, which the actor
  does only after the sync covering it committed, so a crash anywhere re-delivers instead of losing;
- on taking a shard the inbox first claims the entries a former owner left pending
  (``XAUTOCLAIM``), then re-reads its own pending entries (id ``0``), then new ones (``>``);
  a shard given up (``forget``) is no longer read, and its pending entries wait for the next
  owner; entries a read still in flight returns for a shard given up meanwhile are neither
  routed nor acknowledged (the shard's owner syncs them): the owner checks its streams every
  ``trim_every_s`` for entries pending with another consumer and adopts them;
- a stream or group that vanished (NOGROUP: Redis lost its data) is recreated and reported
  through ``on_lost(shard)``, since notifications may have been lost: that shard's accounts
  must each get a sync;
- entries are trimmed with ``XTRIM MINID`` below the oldest pending entry, never past one an
  actor has not acknowledged; an acknowledgement is one XACK, and the streams it touched are
  trimmed by the read loop at most every ``trim_every_s`` (trimming after every XACK would
  triple the Redis commands of a notification);
- entries for accounts this replica does not run (removed, or quarantined) are acknowledged at
  once and counted: a released or re-added account starts with a sync anyway;
- the unread markers of the entries a read returned are cleared before those entries are
  routed (one pipelined round trip per read), so the gateway folds a notification into an
  entry only while that entry's sync has not started yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from cluster.keys import NOTIFICATIONS_GROUP, notifications_key, shard_of
from cluster.streams import unread_marker
from metrics import events as metrics

log = structlog.get_logger("cluster.inbox")


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One notification as the actor receives it; ``ref`` is what it acknowledges later."""

    shard: int
    entry_id: str
    account_id: str
    calendar_id: str
    kind: str
    read_at: float | None = None  # the loop's clock when this replica read it from the stream

    @property
    def ref(self) -> tuple[int, str]:
        """(shard, stream entry id): what ``Inbox.acknowledge`` takes."""
        return self.shard, self.entry_id


_Fields = Mapping[bytes | str, bytes | str]
_Reply = list[tuple[bytes | str, list[tuple[bytes | str, _Fields]]]]

# Route an entry to its actor; False when no actor takes it (it is acknowledged at once).
Router = Callable[[InboxEntry], bool]


@dataclass(slots=True)
class InboxStatistics:
    """Counters for the monitor and metrics."""

    delivered: int = 0
    acknowledged: int = 0
    dropped: int = 0  # entries for accounts this replica does not run
    malformed: int = 0
    adopted: int = 0  # entries claimed from a former owner of a shard
    groups_recreated: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_entry(
    shard: int, entry_id: str, fields: _Fields, *, read_at: float | None = None
) -> InboxEntry:
    """An inbox entry from a stream entry's fields; ValueError if a required field is missing."""
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return InboxEntry(
            shard, entry_id, values["account_id"], values["calendar_id"], values["kind"], read_at
        )
    except KeyError as exc:
        raise ValueError(f"stream entry {entry_id} lacks {exc.args[0]!r}") from None


@dataclass(slots=True)
class Inbox:
    """Consumes ``iw:{shard:<n>}:notifications`` for the shards ``shards()`` names."""

    redis: Redis
    consumer: str
    route: Router
    on_lost: Callable[[int], None]
    block_ms: int = 1000
    count: int = 200
    trim_every_s: float = 1.0
    statistics: InboxStatistics = field(default_factory=InboxStatistics)
    _untrimmed: set[int] = field(default_factory=set)  # shards acknowledged since their trim
    _trimmed_at: float = 0.0
    _strays_at: float = 0.0
    # Per shard, the last own-pending entry re-read at start; absent once the backlog is done.
    _backlog: dict[int, str] = field(default_factory=dict)
    _known: set[int] = field(default_factory=set)
    _forgotten: set[int] = field(default_factory=set)  # given up during the current read

    async def run(self, shards: Callable[[], Iterable[int]]) -> None:
        """Read and route until cancelled; the shard set may change between reads."""
        while True:
            owned = sorted(shards())
            if not owned:
                await asyncio.sleep(self.block_ms / 1000)
                continue
            await self.read_once(owned)

    async def read_once(self, shards: Sequence[int]) -> int:
        """One XREADGROUP over ``shards`` (own backlog first); the number of entries routed."""
        self._forgotten = set()
        now = asyncio.get_running_loop().time()
        if self._untrimmed and now - self._trimmed_at >= self.trim_every_s:
            await self.trim_acknowledged()
        if now - self._strays_at >= self.trim_every_s:
            await self.adopt_strays(shards)
        for shard in shards:
            # A shard given up during this call's awaits must not be taken up again.
            if shard not in self._known and shard not in self._forgotten:
                await self._ensure_group(shard, lost=False)
                await self._adopt(shard)
                self._backlog[shard] = "0"
        shards = [s for s in shards if s not in self._forgotten]
        if not shards:
            return 0
        backlog = [s for s in shards if s in self._backlog]
        streams = {notifications_key(s): self._backlog[s] for s in backlog} or {
            notifications_key(s): ">" for s in shards
        }
        try:
            reply = await self.redis.xreadgroup(
                NOTIFICATIONS_GROUP,
                self.consumer,
                streams,  # type: ignore[arg-type]
                count=self.count,
                block=None if backlog else self.block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._recover(shards)
            return 0
        streams_read = cast(_Reply, reply or [])
        await self._mark_read(streams_read)
        routed = 0
        for key, entries in streams_read:
            shard = shard_of(_text(key))
            # A shard given up (``forget``) while this read was in flight has no backlog left.
            if shard in backlog and shard in self._backlog:
                if entries:
                    self._backlog[shard] = _text(entries[-1][0])  # continue after these
                else:
                    del self._backlog[shard]  # own pending entries all re-read
            routed += await self._route_all(shard, entries)
        return routed

    async def _mark_read(self, streams_read: _Reply) -> None:
        """Clear the unread markers of the entries just read, before routing them: a
        notification arriving from now on gets an entry of its own, and one that arrived
        before folded into an entry whose sync starts after this (``cluster.streams``)."""
        markers = {
            marker
            for key, entries in streams_read
            for _, fields in entries
            if fields and (marker := unread_marker(shard_of(_text(key)), fields)) is not None
        }
        if not markers:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for marker in markers:  # one key each: the shards' slots may differ
                pipe.delete(marker)
            await pipe.execute()

    def forget(self, shard: int) -> None:
        """Stop reading ``shard`` (given up); its entries still pending go to the next owner."""
        self._known.discard(shard)
        self._forgotten.add(shard)
        self._backlog.pop(shard, None)

    async def _adopt(self, shard: int) -> None:
        """Make every entry of ``shard`` pending for another consumer (a former owner that died
        or gave the shard up) this replica's own, so the backlog read delivers it here."""
        key, start = notifications_key(shard), "0-0"
        while True:
            # Not JUSTID: redis-py then returns the ids alone, without the cursor to go on from.
            reply = await self.redis.xautoclaim(
                key, NOTIFICATIONS_GROUP, self.consumer, min_idle_time=0, start_id=start, count=500
            )
            start, claimed = _text(reply[0]), reply[1]
            self.statistics.adopted += len(claimed)
            if start == "0-0":
                return

    async def adopt_strays(self, shards: Sequence[int]) -> None:
        """Adopt entries of ``shards`` pending with another consumer: a former owner's read
        that was in flight when it gave the shard up (or froze past its lease) delivered them
        there after this replica had taken the shard. One pipelined round trip."""
        self._strays_at = asyncio.get_running_loop().time()
        known = [shard for shard in shards if shard in self._known]
        if not known:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in known:
                pipe.xpending(notifications_key(shard), NOTIFICATIONS_GROUP)
            replies = await pipe.execute(raise_on_error=False)
        for shard, summary in zip(known, replies, strict=True):
            if not isinstance(summary, dict):
                continue  # the stream vanished: the read loop recovers it
            others = [
                c for c in summary.get("consumers") or [] if _text(c["name"]) != self.consumer
            ]
            if any(int(c["pending"]) for c in others):
                await self._adopt(shard)
                self._backlog[shard] = "0"  # re-read the own backlog, the adopted entries too

    async def acknowledge(self, refs: Iterable[tuple[int, str]]) -> None:
        """Acknowledge entries (after the commit that covers them) and trim what is done."""
        by_shard: dict[int, list[str]] = {}
        for shard, entry_id in refs:
            by_shard.setdefault(shard, []).append(entry_id)
        for shard, ids in by_shard.items():
            key = notifications_key(shard)
            self.statistics.acknowledged += await self.redis.xack(key, NOTIFICATIONS_GROUP, *ids)
            log.debug("notifications acknowledged", stream=key, entry_ids=ids)
            self._untrimmed.add(shard)

    async def trim_acknowledged(self) -> None:
        """Trim every stream acknowledged in since its last trim (the read loop calls this):
        below its oldest pending entry, or up to its last delivered one when none is pending.
        Two pipelined round trips whatever the number of streams."""
        self._trimmed_at = asyncio.get_running_loop().time()
        shards, self._untrimmed = self._untrimmed, set()
        keys = [notifications_key(shard) for shard in sorted(shards)]
        if not keys:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xpending(key, NOTIFICATIONS_GROUP)
                pipe.xinfo_groups(key)
            replies = await pipe.execute(raise_on_error=False)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, summary, groups in zip(keys, replies[::2], replies[1::2], strict=True):
                oldest = _trim_point(summary, groups)
                if oldest is not None:
                    pipe.xtrim(key, minid=oldest, approximate=False)
            # A stream that vanished meanwhile is the read loop's to recover, not the trim's.
            await pipe.execute(raise_on_error=False)

    async def _route_all(self, shard: int, entries: Sequence[tuple[bytes | str, _Fields]]) -> int:
        if shard not in self._known:
            # Given up while this read was in flight: the entries stay pending, and the shard's
            # owner adopts them (``adopt_strays``); acknowledging them here would lose them.
            return 0
        unroutable: list[tuple[int, str]] = []
        routed = 0
        now = asyncio.get_running_loop().time()
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if not fields:  # a pending entry that was trimmed away meanwhile
                unroutable.append((shard, entry_id))
                continue
            try:
                entry = parse_entry(shard, entry_id, fields, read_at=now)
            except ValueError:
                self.statistics.malformed += 1
                unroutable.append((shard, entry_id))
                continue
            self.statistics.delivered += 1
            if self.route(entry):
                routed += 1
                metrics.observe_stream_lag(fields.get(b"received_at") or fields.get("received_at"))
                log.debug(
                    "notification consumed",
                    stream=notifications_key(shard),
                    entry_id=entry_id,
                    account_id=entry.account_id,
                    calendar_id=entry.calendar_id,
                    kind=entry.kind,
                )
            else:
                self.statistics.dropped += 1
                unroutable.append(entry.ref)
        if unroutable:
            await self.acknowledge(unroutable)
        return routed

    async def _ensure_group(self, shard: int, *, lost: bool) -> None:
        key = notifications_key(shard)
        try:
            await self.redis.xgroup_create(key, NOTIFICATIONS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            if lost:
                self.statistics.groups_recreated += 1
                log.warning("notification stream lost; resyncing its shard", shard=shard)
                self.on_lost(shard)
        self._known.add(shard)

    async def _recover(self, shards: Sequence[int]) -> None:
        for shard in shards:
            with contextlib.suppress(ResponseError):
                await self._ensure_group(shard, lost=True)
            self._backlog.pop(shard, None)  # a recreated group has no pending entries


def _trim_point(summary: object, groups: object) -> str | None:
    """Where ``XTRIM MINID`` may cut: the oldest pending id, else the group's last delivered
    one; None when a reply is an error (a stream or group that vanished)."""
    if isinstance(summary, dict) and summary.get("min") is not None:
        return _text(summary["min"])
    if isinstance(summary, dict) and isinstance(groups, list):
        mine = next((g for g in groups if _text(g["name"]) == NOTIFICATIONS_GROUP), None)
        delivered = None if mine is None else mine.get("last-delivered-id")
        return None if delivered is None else _text(delivered)
    return None
