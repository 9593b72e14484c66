"""A seeded chaos test of the whole pipeline: many accounts on both providers, random user edits
and random faults, then quiescence and an exact comparison.

Twelve accounts (six Google, three of them with a second calendar; six Microsoft) start with a
few timed and all-day events and a weekly series each, sync, and open push channels to the real
gateway (``sandbox.harness.pipeline``; periodic polling is off). Then, in rounds driven by
``random.Random(seed)``, people edit their calendars (create, rename, move within the window,
move out of the window, delete, cancel one occurrence of a series, rename one occurrence, rename
a whole series) while faults are injected: 429 with Retry-After, 5xx, 410 / expired sync
tokens and delta links, expired access tokens, dropped and duplicated notifications, Graph delta
rounds that repeat the previous round, and actor crashes in the middle of a sync (the test
holds the calendar row locked until the actor's page commit blocks, then terminates that
Postgres backend). Finally faults are cleared, every actor gets a ``sync-now`` (what an operator
does after an incident: dropped notifications are otherwise only covered by the periodic poll),
and the test waits until no actor is busy, no stream entry is pending and the relay published
every change.

Proven, per seed:
- every calendar in Postgres equals the emulator's own export of its state (the emulator's
  calendar view over the stored window, series expanded by its own recurrence code; not a
  projection through our mappers): same events, statuses, times, titles and etags;
- the change feed holds exactly one change per real difference. Precisely: replaying the
  ``changes`` rows written since the snapshot (taken after the first sync, when Postgres equals
  the emulators) over the snapshot reproduces the final state exactly, and every row is a real
  transition to a version the provider actually served: ``created`` only for an absent event,
  ``updated`` and ``deleted`` only for a present one, ``updated`` always to another etag,
  ``deleted`` with the etag being removed, and versions only move forward (no row brings back a
  version older than one already recorded, so no wipe-and-reload pair and no stale replay). An
  event edited twice between two syncs has one row, one edited, synced and edited again has
  two; resyncs after 410, duplicated notifications and repeated delta rounds add none. The net
  effect of the rows per event (created, updated, deleted or nothing) equals the difference
  between the emulator's exports before and after, event by event;
- at least one actor really crashed and was restarted, and nothing stayed pending.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.embedded import Services
from sandbox.harness.pipeline import (
    GRAPH_DEFAULT,
    Person,
    Pipeline,
    State,
    crash_mid_sync,
    open_pipeline,
    wait_until,
)
from store.db import PgPool

GOOGLE_ACCOUNTS = 6
MICROSOFT_ACCOUNTS = 6
ROUNDS = 5
EDITS_PER_ROUND = (5, 9)
TITLES = ("Standup", "1:1", "Design review", "Lunch", "Customer call", "Focus time", "Retro")
Key = tuple[str, str, str]  # (account id, calendar id, event id)


def _wall(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class People:
    """Random edits through the emulators' control objects, as people in the providers' UIs."""

    pipeline: Pipeline
    rng: random.Random
    now: datetime
    windows: dict[str, dict[str, tuple[datetime, datetime]]] = field(default_factory=dict)
    versions: dict[Key, list[str]] = field(default_factory=dict)  # etags in the order served

    # -- creating ------------------------------------------------------------------------------

    def timed(self, person: Person, calendar_id: str, start: datetime, title: str) -> None:
        end = start + timedelta(minutes=self.rng.choice((30, 60, 90)))
        if person.provider == "google":
            body = {
                "summary": title,
                "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": end.isoformat()},
            }
            self.pipeline.control("google").create_event(calendar_id, body)
        else:
            body = {
                "subject": title,
                "start": {"dateTime": _wall(start), "timeZone": "UTC"},
                "end": {"dateTime": _wall(end), "timeZone": "UTC"},
            }
            self.pipeline.control("microsoft").create_event(person.email, body)

    def all_day(self, person: Person, calendar_id: str, day: datetime, title: str) -> None:
        first = day.date()
        last = first + timedelta(days=self.rng.choice((1, 2)))
        body: dict[str, Any]
        if person.provider == "google":
            body = {
                "summary": title,
                "start": {"date": first.isoformat()},
                "end": {"date": last.isoformat()},
            }
            self.pipeline.control("google").create_event(calendar_id, body)
        else:
            body = {
                "subject": title,
                "isAllDay": True,
                "start": {"dateTime": f"{first.isoformat()}T00:00:00", "timeZone": "UTC"},
                "end": {"dateTime": f"{last.isoformat()}T00:00:00", "timeZone": "UTC"},
            }
            self.pipeline.control("microsoft").create_event(person.email, body)

    def weekly(self, person: Person, calendar_id: str, first: datetime) -> None:
        count = self.rng.randint(4, 8)
        if person.provider == "google":
            body = {
                "summary": "Weekly planning",
                "start": {"dateTime": _local(first), "timeZone": "Europe/Berlin"},
                "end": {
                    "dateTime": _local(first + timedelta(hours=1)),
                    "timeZone": "Europe/Berlin",
                },
                "recurrence": [f"RRULE:FREQ=WEEKLY;COUNT={count}"],
            }
            self.pipeline.control("google").create_event(calendar_id, body)
        else:
            zone = "W. Europe Standard Time"
            body = {
                "subject": "Weekly planning",
                "start": {"dateTime": _local(first), "timeZone": zone},
                "end": {"dateTime": _local(first + timedelta(hours=1)), "timeZone": zone},
                "recurrence": {
                    "pattern": {
                        "type": "weekly",
                        "interval": 1,
                        "daysOfWeek": [first.strftime("%A").lower()],
                    },
                    "range": {
                        "type": "numbered",
                        "startDate": first.date().isoformat(),
                        "numberOfOccurrences": count,
                    },
                },
            }
            self.pipeline.control("microsoft").create_event(person.email, body)

    def seed(self, person: Person, calendars: list[str]) -> None:
        for calendar_id in calendars:
            for _ in range(self.rng.randint(2, 4)):
                self.timed(person, calendar_id, self.soon(), self.rng.choice(TITLES))
            if self.rng.random() < 0.5:
                self.all_day(person, calendar_id, self.soon(), "Offsite")
            weekly = self.now.replace(hour=9) - timedelta(days=7 * self.rng.randint(0, 2))
            self.weekly(person, calendar_id, weekly)

    def soon(self) -> datetime:
        return self.now + timedelta(hours=self.rng.randint(-72, 24 * 40))

    # -- editing -------------------------------------------------------------------------------

    def edit(self, person: Person, calendar_id: str) -> str:
        """One random edit of one calendar; what it was."""
        rows = self.export(person, calendar_id)
        singles = [r["event_id"] for r in rows if not _instance(person, r["event_id"])]
        instances = [r["event_id"] for r in rows if _instance(person, r["event_id"])]
        masters = self.masters(person, calendar_id)
        roll = self.rng.random()
        title = self.rng.choice(TITLES)
        if roll < 0.25 or not singles:
            if self.rng.random() < 0.8:
                self.timed(person, calendar_id, self.soon(), title)
            else:
                self.all_day(person, calendar_id, self.soon(), title)
            return "create"
        target = self.rng.choice(singles)
        if roll < 0.45:
            self.rename(person, calendar_id, target, title)
            return "rename"
        if roll < 0.55:
            self.move(person, calendar_id, target, self.soon())
            return "move"
        if roll < 0.62:
            far = self.now + timedelta(days=self.rng.randint(500, 700))
            self.move(person, calendar_id, target, far)  # beyond the 365-day window
            return "move out of window"
        if roll < 0.75:
            self.delete(person, calendar_id, target)
            return "delete"
        if roll < 0.85 and instances:
            self.delete(person, calendar_id, self.rng.choice(instances))
            return "cancel occurrence"
        if roll < 0.93 and instances:
            self.rename(person, calendar_id, self.rng.choice(instances), title)
            return "rename occurrence"
        if masters:
            self.rename(person, calendar_id, self.rng.choice(masters), f"{title} (series)")
            return "rename series"
        self.rename(person, calendar_id, target, title)
        return "rename"

    def rename(self, person: Person, calendar_id: str, event_id: str, title: str) -> None:
        if person.provider == "google":
            self.pipeline.control("google").update_event(calendar_id, event_id, {"summary": title})
        else:
            changes = {"subject": title}
            self.pipeline.control("microsoft").update_event(person.email, event_id, changes)

    def move(self, person: Person, calendar_id: str, event_id: str, start: datetime) -> None:
        end = start + timedelta(hours=1)
        changes: dict[str, Any]
        if person.provider == "google":
            changes = {
                "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": end.isoformat()},
            }
            self.pipeline.control("google").update_event(calendar_id, event_id, changes)
        else:
            changes = {
                "isAllDay": False,
                "start": {"dateTime": _wall(start), "timeZone": "UTC"},
                "end": {"dateTime": _wall(end), "timeZone": "UTC"},
            }
            self.pipeline.control("microsoft").update_event(person.email, event_id, changes)

    def delete(self, person: Person, calendar_id: str, event_id: str) -> None:
        if person.provider == "google":
            self.pipeline.control("google").delete_event(calendar_id, event_id)
        else:
            self.pipeline.control("microsoft").delete_event(person.email, event_id)

    def masters(self, person: Person, calendar_id: str) -> list[str]:
        if person.provider == "google":
            events = self.pipeline.control("google").events(calendar_id)
            return [e["id"] for e in events if "recurrence" in e and e["status"] != "cancelled"]
        events = self.pipeline.control("microsoft").events(person.email)
        return [e["id"] for e in events if e["type"] == "seriesMaster"]

    # -- observing -----------------------------------------------------------------------------

    def export(self, person: Person, calendar_id: str) -> list[dict[str, Any]]:
        window = self.windows[str(person.account_id)][calendar_id]
        return list(self.pipeline.exported(person, {calendar_id: window}).values())

    def record(self, person: Person) -> State:
        """The account's state as the emulator exports it; remember every etag it serves."""
        state = self.pipeline.exported(person, self.windows[str(person.account_id)])
        for (calendar_id, event_id), row in state.items():
            seen = self.versions.setdefault((str(person.account_id), calendar_id, event_id), [])
            if row["etag"] not in seen:
                seen.append(row["etag"])
        return state


def _local(moment: datetime) -> str:
    """Wall-clock time without offset (the zone field says where)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _instance(person: Person, event_id: str) -> bool:
    """Whether an exported id is one occurrence of a series (Google: ``<master>_<start>``)."""
    return "_" in event_id if person.provider == "google" else event_id.startswith("AAMkOC")


def _faults(pipeline: Pipeline, rng: random.Random, person: Person, calendar_id: str) -> str:
    """One random fault; what it was."""
    google, graph = pipeline.control("google"), pipeline.control("microsoft")
    is_google = person.provider == "google"
    roll = rng.random()
    if roll < 0.15:
        retry_after = rng.choice(("0.2", "0.5", "1"))
        if is_google:
            google.add_fault("rate_limit_429", path="*events*", retry_after=retry_after)
        else:
            graph.add_fault("throttled", path="*calendarView*", retry_after=retry_after)
        return "429"
    if roll < 0.3:
        count = rng.randint(1, 3)
        if is_google:
            kind = rng.choice(("backend_error", "unavailable"))
            google.add_fault(kind, path="*events*", count=count)
        else:
            kind = rng.choice(("unavailable", "server_error", "gateway_timeout"))
            graph.add_fault(kind, path="*calendarView*", count=count)
        return "5xx"
    if roll < 0.45:
        if is_google:
            google.invalidate_sync_tokens(calendar_id, with_reason=rng.random() < 0.5)
        else:
            graph.invalidate_delta_tokens(person.email)
        return "410"
    if roll < 0.55:
        pipeline.control(person.provider).expire_access_tokens(person.email)
        return "token expired"
    if roll < 0.7:
        pipeline.control(person.provider).drop_notifications(rng.randint(1, 2))
        return "drop"
    if roll < 0.85:
        pipeline.control(person.provider).duplicate_notifications(rng.randint(1, 3))
        return "duplicate"
    graph.replay_delta_rounds(1)
    return "replay delta round"


def _replay(
    before: dict[Key, str], changes: list[Any], versions: dict[Key, list[str]]
) -> tuple[dict[Key, str], list[str]]:
    """Apply change rows to the snapshot; the resulting etags and every invalid transition."""
    state = dict(before)
    newest: dict[Key, int] = {key: versions[key].index(etag) for key, etag in before.items()}
    problems: list[str] = []
    for change in changes:
        key = (str(change["account_id"]), change["calendar_id"], change["event_id"])
        kind, etag = change["kind"], change["etag"]
        order = versions.get(key, [])
        where = f"change {change['id']} {kind} {key} etag {etag}"
        if etag not in order:
            problems.append(f"{where}: a version the provider never served")
            continue
        index = order.index(etag)
        if kind == "created" and key in state:
            problems.append(f"{where}: created while present")
        if kind in ("updated", "deleted") and key not in state:
            problems.append(f"{where}: {kind} while absent")
        if kind == "updated" and state.get(key) == etag:
            problems.append(f"{where}: updated to the same version")
        if kind == "deleted" and key in state and state[key] != etag:
            problems.append(f"{where}: deleted another version than stored ({state[key]})")
        if kind in ("created", "updated") and index <= newest.get(key, -1):
            problems.append(f"{where}: back to a version not newer than one recorded")
        if kind == "deleted":
            state.pop(key, None)
        else:
            state[key] = etag
            newest[key] = max(newest.get(key, -1), index)
    return state, problems


def _net(before: dict[Key, str], after: dict[Key, str]) -> dict[Key, str]:
    """Per event, what changed between two states: created, updated or deleted."""
    out: dict[Key, str] = {}
    for key in before.keys() | after.keys():
        if key not in before:
            out[key] = "created"
        elif key not in after:
            out[key] = "deleted"
        elif before[key] != after[key]:
            out[key] = "updated"
    return out


async def _etags(pipeline: Pipeline, people: People) -> dict[Key, str]:
    out: dict[Key, str] = {}
    for person in pipeline.people.values():
        for (calendar_id, event_id), row in people.record(person).items():
            out[(str(person.account_id), calendar_id, event_id)] = str(row["etag"])
    return out


async def _connect(pipeline: Pipeline, people: People, seed: int) -> dict[str, list[str]]:
    """Six Google accounts (every other one with a Team calendar), six Microsoft ones, seeded;
    once all synced and watching, Postgres equals the emulators. Calendars by account id."""
    calendars: dict[str, list[str]] = {}
    for i in range(GOOGLE_ACCOUNTS + MICROSOFT_ACCOUNTS):
        google = i < GOOGLE_ACCOUNTS
        person = await pipeline.add_person(
            "google" if google else "microsoft", f"user{i}-{seed}@example.com"
        )
        mine = [person.email] if google else [GRAPH_DEFAULT]
        if google and i % 2 == 0:
            extra = pipeline.control("google").add_calendar(person.email, "Team")
            mine.append(extra["id"])
        calendars[str(person.account_id)] = mine
        people.seed(person, mine)
    await wait_until(pipeline.watching, "every account synced and watching", timeout_s=40)
    await pipeline.settle()
    for person in pipeline.people.values():
        people.windows[str(person.account_id)] = await pipeline.windows(person)
    assert await pipeline.differences() == []
    return calendars


async def _chaos(
    pipeline: Pipeline, people: People, calendars: dict[str, list[str]], script: list[str]
) -> int:
    """The rounds of faults and edits, each ending with a crash in the middle of a sync; the
    number of crashes that landed."""
    rng = people.rng
    everyone = list(pipeline.people.values())

    def anywhere() -> tuple[Person, str]:
        person = rng.choice(everyone)
        return person, rng.choice(calendars[str(person.account_id)])

    crashes = 0
    for _ in range(ROUNDS):
        for _ in range(rng.randint(1, 3)):
            person, calendar_id = anywhere()
            script.append(f"fault {_faults(pipeline, rng, person, calendar_id)}")
        for _ in range(rng.randint(*EDITS_PER_ROUND)):
            person, calendar_id = anywhere()
            script.append(f"edit {people.edit(person, calendar_id)}")
            people.record(person)
        await asyncio.sleep(0.2)  # let the pipeline run between rounds
        person, calendar_id = anywhere()

        def trigger(who: Person = person, where: str = calendar_id) -> None:
            script.append(f"edit {people.edit(who, where)} (then crash)")
            people.record(who)

        crash = await crash_mid_sync(pipeline, person, calendar_id, trigger, timeout_s=3.0)
        crashes += crash is not None
    return crashes


@pytest.mark.parametrize("seed", [20261122, 7])
@pytest.mark.usefixtures("redis")  # empties Redis first: no streams or groups of other tests
async def test_chaos_converges_with_one_change_per_real_difference(
    seed: int, database_url: str, services: Services, pool: PgPool
) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with open_pipeline(database_url, services.redis_url, pool, shards=4) as pipeline:
        people = People(pipeline, rng, now)
        calendars = await _connect(pipeline, people, seed)
        # The snapshot: Postgres equals the emulators here; changes from now on are counted.
        before = await _etags(pipeline, people)
        changes_before = int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM changes"))

        script: list[str] = []
        crashes = await _chaos(pipeline, people, calendars, script)

        # Quiescence: faults cleared, then what an operator does after an incident.
        for provider in ("google", "microsoft"):
            pipeline.control(provider).clear_faults()
        await pipeline.settle()
        pipeline.sync_everyone()
        await pipeline.settle()

        assert await pipeline.differences() == [], script
        after = await _etags(pipeline, people)
        changes = await pool.fetch(
            "SELECT id, account_id, calendar_id, event_id, kind, etag FROM changes"
            " WHERE id > $1 ORDER BY id",
            changes_before,
        )
        replayed, problems = _replay(before, list(changes), people.versions)
        assert problems == [], script
        assert replayed == after
        net = _net(before, replayed)
        assert net == _net(before, after)
        assert net, "the edits changed nothing"
        assert await pipeline.pending_entries() == {}
        assert crashes >= 1, "no crash landed in a sync"
        restarts = sum(pipeline.restarts(p)[0] for p in pipeline.people.values())
        assert restarts >= crashes
