"""No notification is lost, even when an actor crashes in the middle of a sync.

The real pipeline runs in one process (``sandbox.harness.pipeline``): both provider emulators
deliver push notifications over HTTP to the real webhook gateway, which appends them to the
shard streams in Redis; the replica's ``AccountsRuntime`` consumes them through its inbox and
account actors, with periodic polling turned off (a 30-year poll interval), so notifications are
the only thing that starts a sync. One Google and one Microsoft account are edited in bursts
(creates, renames, moves, deletions, a cancelled occurrence of a series).

Proven:
- every entry id the gateway logged as ``notification appended`` is logged by the inbox as
  ``notification consumed`` and then ``notifications acknowledged``; nothing stays pending;
- each entry is acknowledged only after a commit of a sync covering it: when the actor
  acknowledges an entry, Postgres already holds, for that account, the provider's state as of
  the moment the gateway received the entry or a later one (checked against the history of the
  emulator's own exports, version by version, through each event's etag);
- an actor crash in the middle of a sync (the test holds the calendar row locked so that the
  actor's page commit blocks, then terminates that Postgres backend) loses nothing: the entries
  pending at the crash, the one whose sync crashed included, are acknowledged after the
  restarted actor committed; the crash is real (the supervisor recorded it and restarted);
- at the end, Postgres equals each emulator's own export of the account's calendars (not a
  projection through our mappers): same events, statuses, times, titles and etags.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from cluster.inbox import Inbox
from cluster.keys import notifications_key
from sandbox.embedded import Services
from sandbox.harness.pipeline import (
    Crash,
    Person,
    Pipeline,
    State,
    crash_mid_sync,
    open_pipeline,
    wait_until,
)
from store.db import PgPool

# An edit made at a given moment, and the account's state (emulator export) right after it.
Snapshot = tuple[datetime, State]


@dataclass
class History:
    """The emulator's own export of each account after every edit, in order."""

    pipeline: Pipeline
    windows: dict[str, dict[str, tuple[datetime, datetime]]] = field(default_factory=dict)
    snapshots: dict[str, list[Snapshot]] = field(default_factory=dict)

    async def start(self) -> None:
        for person in self.pipeline.people.values():
            key = str(person.account_id)
            self.windows[key] = await self.pipeline.windows(person)
            self.snapshots[key] = []
            self.record(person)

    def record(self, person: Person) -> None:
        """Right after an edit, before anything can deliver its notification."""
        key = str(person.account_id)
        state = self.pipeline.exported(person, self.windows[key])
        self.snapshots[key].append((datetime.now(UTC), state))

    def covered(
        self, person: Person, calendar_id: str, received_at: datetime, stored: State
    ) -> list[str]:
        """What ``stored`` lacks of the state the calendar had when an entry for it was
        received: each event must be at that version or a later one (never older, never
        missing). An entry speaks for its own calendar only (Graph's for the mailbox's
        default calendar, the only one synced)."""
        history = self.snapshots[str(person.account_id)]
        before = [i for i, (at, _) in enumerate(history) if at < received_at]
        if not before:
            return []  # received before the history began
        later = history[before[-1] :]
        keys = {k for _, state in later for k in state} | set(stored)
        keys = {k for k in keys if k[0] == calendar_id}
        problems = []
        for key in keys:
            have = _version(stored.get(key))
            allowed = {_version(state.get(key)) for _, state in later}
            if have not in allowed:
                problems.append(f"{key}: stored {have}, expected one of {allowed}")
        return problems


def _version(row: dict[str, Any] | None) -> str | None:
    return None if row is None else str(row["etag"])


def _records(out: str, event: str) -> Iterator[dict[str, Any]]:
    for line in out.splitlines():
        record = orjson.loads(line)
        if record.get("event") == event:
            yield record


def _timed(title: str, start: datetime, hours: int = 1) -> dict[str, Any]:
    end = start + timedelta(hours=hours)
    return {
        "summary": title,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": end.isoformat()},
    }


def _graph_timed(title: str, start: datetime, hours: int = 1) -> dict[str, Any]:
    def wall(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    end = start + timedelta(hours=hours)
    return {
        "subject": title,
        "start": {"dateTime": wall(start), "timeZone": "UTC"},
        "end": {"dateTime": wall(end), "timeZone": "UTC"},
    }


@dataclass
class Auditor:
    """Wraps ``Inbox.acknowledge``: before each acknowledgement, does Postgres cover it?"""

    pipeline: Pipeline
    history: History
    violations: list[str] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Inbox.acknowledge

        async def checked(inbox: Inbox, refs: Iterable[tuple[int, str]]) -> None:
            refs = list(refs)
            for shard, entry_id in refs:
                try:
                    await self.check(shard, entry_id)
                except Exception as exc:  # never crash the actor from here: report it
                    self.violations.append(f"{entry_id}: check failed: {exc!r}")
            await original(inbox, refs)

        monkeypatch.setattr(Inbox, "acknowledge", checked)

    async def check(self, shard: int, entry_id: str) -> None:
        found = await self.pipeline.redis.xrange(
            notifications_key(shard), min=entry_id, max=entry_id
        )
        if not found or not found[0][1]:
            return  # trimmed meanwhile: nothing to route, acknowledged as such
        fields = {_text(k): _text(v) for k, v in found[0][1].items()}
        person = next(
            p for p in self.pipeline.people.values() if str(p.account_id) == fields["account_id"]
        )
        received_at = datetime.fromisoformat(fields["received_at"])
        stored = await self.pipeline.stored(person)
        for problem in self.history.covered(person, fields["calendar_id"], received_at, stored):
            self.violations.append(f"{entry_id} acknowledged too early: {problem}")
        self.acknowledged.add(entry_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Scenario:
    """Ada (Google: a primary calendar with a weekly series, and a Team calendar) and Bob
    (Microsoft), edited the way the test needs."""

    pipeline: Pipeline
    history: History
    now: datetime
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def google(self) -> Any:
        return self.pipeline.control("google")

    @property
    def graph(self) -> Any:
        return self.pipeline.control("microsoft")

    async def start(self) -> tuple[Person, Person]:
        ada = await self.pipeline.add_person("google", "ada@example.com")
        bob = await self.pipeline.add_person("microsoft", "bob@example.com")
        cal, now = ada.email, self.now  # Google's primary calendar id is the user's address
        for i in (1, 2):
            self.ids[f"g{i}"] = self.google.create_event(cal, _timed(f"g{i}", now + _days(i)))["id"]
            created = self.graph.create_event(bob.email, _graph_timed(f"m{i}", now + _days(i)))
            self.ids[f"m{i}"] = created["id"]
        first = (now + _days(3)).strftime("%Y-%m-%dT%H:%M:%S")
        last = (now + _days(3) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
        series = {
            "summary": "weekly",
            "start": {"dateTime": first, "timeZone": "Europe/Berlin"},
            "end": {"dateTime": last, "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"],
        }
        self.ids["series"] = self.google.create_event(cal, series)["id"]
        self.ids["team"] = self.google.add_calendar(ada.email, "Team")["id"]
        self.google.create_event(self.ids["team"], _timed("t1", now + _days(2)))
        await wait_until(self.pipeline.watching, "both accounts synced and watching", 30)
        await self.pipeline.settle()
        await self.history.start()
        return ada, bob

    def edit(self, person: Person, change: Callable[[], object]) -> None:
        change()
        self.history.record(person)

    def burst(self, ada: Person, bob: Person) -> None:
        """Every edit is one notification (Graph may batch several in one request)."""
        google, graph, cal, now = self.google, self.graph, ada.email, self.now
        self.edit(ada, lambda: google.create_event(cal, _timed("g3", now + _days(4))))
        self.edit(ada, lambda: google.update_event(cal, self.ids["g1"], {"summary": "g1 bis"}))
        window = self.history.windows[str(ada.account_id)][cal]
        instance = min(
            row["event_id"]
            for row in google.export(cal, window)
            if row["event_id"].startswith(f"{self.ids['series']}_")
        )
        self.edit(ada, lambda: google.delete_event(cal, instance))  # one occurrence cancelled
        self.edit(bob, lambda: graph.create_event(bob.email, _graph_timed("m3", now + _days(5))))
        self.edit(bob, lambda: graph.update_event(bob.email, self.ids["m1"], {"subject": "m1 bis"}))
        self.edit(bob, lambda: graph.delete_event(bob.email, self.ids["m2"]))

    async def crash(self, ada: Person, bob: Person) -> Crash:
        """A crash in the middle of Ada's next sync, with more edits while it is stuck."""
        google, graph, cal, now = self.google, self.graph, ada.email, self.now
        far = now + _days(900)  # beyond the 365-day window: the event leaves the window

        def trigger() -> None:
            self.edit(ada, lambda: google.update_event(cal, self.ids["g2"], {"summary": "g2 bis"}))

        def meanwhile() -> None:
            self.edit(ada, lambda: google.create_event(cal, _timed("g5", now + _days(6))))
            self.edit(ada, lambda: google.update_event(cal, self.ids["g2"], _timed("g2", far)))
            self.edit(bob, lambda: graph.update_event(bob.email, self.ids["m1"], {"subject": "m"}))

        crash = await crash_mid_sync(self.pipeline, ada, cal, trigger, meanwhile=meanwhile)
        assert crash is not None, "Ada's sync never reached its commit"
        return crash

    async def one_calendar_failing(self, ada: Person) -> None:
        """Ada's Team calendar fails to sync while her primary one syncs: the Team entry must
        wait for its own commit, and the Team retry must not be replaced by a distant poll."""
        google, cal, team = self.google, ada.email, self.ids["team"]
        google.add_fault("unavailable", path=f"*{team.split('@')[0]}*", count=None)
        self.edit(ada, lambda: google.create_event(team, _timed("t2", self.now + _days(3))))

        async def retrying() -> bool:
            return "retry" in str(self.pipeline.actor_status(ada))

        await wait_until(retrying, "the Team calendar's sync to fail and be retried")
        self.edit(ada, lambda: google.update_event(cal, self.ids["g1"], {"summary": "g1 ter"}))

        async def primary_synced() -> bool:
            stored = await self.pipeline.stored(ada)
            return bool(stored[(cal, self.ids["g1"])]["summary"] == "g1 ter")

        await wait_until(primary_synced, "the primary calendar's sync")
        google.clear_faults()


def _days(count: int) -> timedelta:
    return timedelta(days=count)


@pytest.mark.usefixtures("redis")  # empties Redis first: no streams or groups of other tests
async def test_every_appended_notification_is_acknowledged_after_its_commit(
    database_url: str,
    services: Services,
    pool: PgPool,
    json_logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with open_pipeline(database_url, services.redis_url, pool) as pipeline:
        history = History(pipeline)
        auditor = Auditor(pipeline, history)
        auditor.install(monkeypatch)
        scenario = Scenario(pipeline, history, now)
        ada, bob = await scenario.start()

        scenario.burst(ada, bob)
        await pipeline.settle()
        assert await pipeline.differences() == []

        crash = await scenario.crash(ada, bob)
        acknowledged_at_crash = set(auditor.acknowledged)
        pending_at_crash = {i for ids in crash.pending.values() for i in ids}
        assert pending_at_crash, "the crashed sync held no entry"
        await pipeline.settle()
        restarts, last_error = pipeline.restarts(ada)
        assert restarts >= 1, "the actor did not crash"
        assert last_error is not None
        assert await pipeline.differences() == []
        assert await pipeline.pending_entries() == {}

        await scenario.one_calendar_failing(ada)
        await pipeline.settle()
        assert await pipeline.differences() == []
        assert await pipeline.pending_entries() == {}

    out = json_logs.getvalue()
    appended = {r["entry_id"] for r in _records(out, "notification appended")}
    consumed = {r["entry_id"] for r in _records(out, "notification consumed")}
    acked = {i for r in _records(out, "notifications acknowledged") for i in r["entry_ids"]}
    assert appended, "no notification went through the gateway"
    assert len(appended) == pipeline.gateway.appended
    assert appended <= consumed, f"never consumed: {sorted(appended - consumed)}"
    assert appended <= acked, f"never acknowledged: {sorted(appended - acked)}"
    assert appended <= auditor.acknowledged
    assert pending_at_crash.isdisjoint(acknowledged_at_crash)
    assert pending_at_crash <= acked
    assert auditor.violations == []
