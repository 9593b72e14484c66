"""The seeded outbox property test's pieces: random application requests, the model of what the
provider must end up showing, user edits through the emulators, and the provider's side read
back from the emulators themselves (our events found by the binding id they carry).

The model (``Model``), per account and source, applies each request when it is INSERTED:
- a request whose version is below the highest version already inserted for the source is
  stale: it must end ``skipped`` and changes nothing (an upsert after a higher cancel included);
- any other request is live: a cancel removes the event (whatever the user did to it); an upsert
  makes the provider show its content, except when the provider shows the user's edit of our
  event and the account's policy is ``provider_wins`` or ``record``: the user's edit stays (with
  ``record``, the source gets a row in ``outbox_conflicts``);
- a user's edit (made only while everything is settled) makes the provider show the user's
  version; a user's deletion removes the event, and the next live upsert creates it anew.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from providers.google.mapping import BINDING_PROPERTY
from providers.microsoft.mapping import BINDING_PROPERTY_ID
from sandbox.harness.pipeline import GRAPH_DEFAULT, Person, Pipeline
from store.db import PgPool

UPSERT, CANCEL = "UPSERT_EVENT", "CANCEL_EVENT"
WORDS = ("Deadline", "Review", "Launch", "Handover", "Audit", "Demo", "Kickoff", "Retro")
INSERT = (
    "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
    " event_type, calendar_id, version, title, all_day, start_date, end_date, start_at, end_at)"
    " VALUES ($1, $2, 'ws-prop', 'task', $3, 'BLOCKER_DEADLINE', 'primary', $4, $5, $6, $7, $8,"
    " $9, $10) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class Shown:
    """An event as the emulator's export shows it."""

    summary: str
    start: str
    end: str
    all_day: bool


@dataclass(frozen=True, slots=True)
class Content:
    """An upsert's title and timing."""

    title: str
    start: datetime | date
    end: datetime | date

    @property
    def all_day(self) -> bool:
        return not isinstance(self.start, datetime)

    def shown(self) -> Shown:
        """How the emulators export an event with this content."""
        return Shown(self.title, _edge(self.start), _edge(self.end), self.all_day)


def _edge(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value.isoformat()


@dataclass(frozen=True, slots=True)
class Request:
    """One outbox row an application inserts."""

    account_id: UUID
    source: str
    operation: str
    version: int
    content: Content | None


@dataclass
class SourceModel:
    """What the provider must show for one source, and what its requests must end as."""

    top: int = -1  # the highest version inserted
    shown: Shown | None = None
    by_user: bool = False  # the provider shows the user's edit of our event
    conflicted: bool = False  # (record) a live upsert met the user's edit
    last_live: int | None = None  # the item that decided the source: it must end done


@dataclass
class AccountModel:
    """One account's sources under its conflict policy."""

    person: Person
    policy: str
    sources: dict[str, SourceModel] = field(default_factory=dict)


@dataclass
class Model:
    """Every account's sources; the items' expected outcomes (``skipped`` or ``done``)."""

    accounts: dict[UUID, AccountModel] = field(default_factory=dict)
    must_skip: set[int] = field(default_factory=set)

    def source(self, request: Request) -> SourceModel:
        return self.accounts[request.account_id].sources.setdefault(request.source, SourceModel())

    def inserted(self, request: Request, item_id: int) -> None:
        """Apply a request at its insert (see the module docstring)."""
        account = self.accounts[request.account_id]
        state = self.source(request)
        if request.version < state.top:
            self.must_skip.add(item_id)
            return
        state.top, state.last_live = request.version, item_id
        if request.operation == CANCEL:
            state.shown, state.by_user = None, False
            return
        assert request.content is not None
        if state.by_user and account.policy != "local_wins":
            state.conflicted = state.conflicted or account.policy == "record"
            return
        state.shown, state.by_user = request.content.shown(), False

    def user_renamed(self, account_id: UUID, source: str, title: str) -> None:
        state = self.accounts[account_id].sources[source]
        assert state.shown is not None
        state.shown, state.by_user = replace(state.shown, summary=title), True

    def user_deleted(self, account_id: UUID, source: str) -> None:
        state = self.accounts[account_id].sources[source]
        state.shown, state.by_user = None, False

    def expected(self, account_id: UUID) -> dict[str, Shown]:
        """Per source, what the provider must show (absent: no event)."""
        sources = self.accounts[account_id].sources
        return {name: s.shown for name, s in sources.items() if s.shown is not None}


@dataclass
class Requests:
    """Random application requests: new versions, late (stale) ones, cancels, re-upserts."""

    rng: random.Random
    model: Model
    base: datetime
    sources_per_account: int

    def content(self, source: str, version: int) -> Content:
        word = self.rng.choice(WORDS)
        title = f"{word} {source} v{version}"
        if self.rng.random() < 0.3:
            first = self.base.date() + timedelta(days=self.rng.randint(1, 60))
            return Content(title, first, first + timedelta(days=self.rng.choice((1, 2))))
        start = self.base + timedelta(hours=self.rng.randint(24, 24 * 60))
        return Content(title, start, start + timedelta(minutes=self.rng.choice((30, 60, 90))))

    def next(self, account: AccountModel) -> Request:
        """One random request for one of the account's sources."""
        account_id = account.person.account_id
        source = f"s{self.rng.randrange(self.sources_per_account)}"
        state = account.sources.get(source, SourceModel())
        roll = self.rng.random()
        if state.top >= 1 and roll < 0.25:
            version = self.rng.randint(max(0, state.top - 3), state.top - 1)  # arrives late
            if self.rng.random() < 0.7:
                return Request(account_id, source, UPSERT, version, self.content(source, version))
            return Request(account_id, source, CANCEL, version, None)
        version = state.top + self.rng.randint(1, 3)
        if state.top >= 0 and roll < 0.42:
            return Request(account_id, source, CANCEL, version, None)
        return Request(account_id, source, UPSERT, version, self.content(source, version))


async def insert(pool: PgPool, request: Request) -> int:
    """What an application does: insert the request in its own transaction; the item's id."""
    content = request.content
    timing: list[Any] = [None, None, None, None, None]
    if content is not None:
        if content.all_day:
            timing = [True, content.start, content.end, None, None]
        else:
            timing = [False, None, None, content.start, content.end]
    async with pool.acquire() as conn, conn.transaction():
        item_id = await conn.fetchval(
            INSERT,
            request.account_id,
            request.operation,
            request.source,
            request.version,
            None if content is None else content.title,
            *timing,
        )
    return int(item_id)


# -- the provider's side --------------------------------------------------------------------------


def calendar_of(person: Person) -> str:
    """The account's primary calendar as ``calendars`` stores it."""
    return person.email if person.provider == "google" else GRAPH_DEFAULT


def bound_events(pipeline: Pipeline, person: Person) -> dict[str, list[str]]:
    """Binding id -> the live events in the emulator carrying it (one, unless duplicated)."""
    out: dict[str, list[str]] = {}
    control = pipeline.control(person.provider)
    if person.provider == "google":
        for body in control.events(person.email):
            binding = body.get("extendedProperties", {}).get("private", {}).get(BINDING_PROPERTY)
            if binding is not None and body.get("status") != "cancelled":
                out.setdefault(str(binding), []).append(str(body["id"]))
        return out
    store = control._store
    owner = control._user(person.email).id
    for record in store.events.values():
        if record.owner != owner or record.deleted:
            continue
        for prop in record.body.get("singleValueExtendedProperties", []):
            if str(prop.get("id", "")).lower() == BINDING_PROPERTY_ID.lower():
                out.setdefault(str(prop["value"]), []).append(str(record.id))
    return out


async def provider_view(
    pipeline: Pipeline, person: Person
) -> tuple[dict[str, Shown], dict[str, str], list[str]]:
    """Per source, what the emulator's own export shows; each source's event id; problems
    (duplicated or unbound events, bindings the database does not know)."""
    sources = {
        str(r["id"]): str(r["source_id"])
        for r in await pipeline.pool.fetch(
            "SELECT id, source_id FROM event_bindings WHERE account_id = $1", person.account_id
        )
    }
    exported = pipeline.exported(person, await pipeline.windows(person))
    rows = {event_id: row for (_, event_id), row in exported.items()}
    shown: dict[str, Shown] = {}
    ids: dict[str, str] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for binding, events in sorted(bound_events(pipeline, person).items()):
        source = sources.get(binding)
        if source is None or len(events) != 1:
            problems.append(f"{person.email}: binding {binding} ({source}) has events {events}")
            continue
        seen.update(events)
        row = rows.get(events[0])
        if row is None:
            problems.append(f"{person.email}: {source}'s event {events[0]} not in the export")
            continue
        ids[source] = events[0]
        shown[source] = Shown(
            str(row["summary"]), str(row["start"]), str(row["end"]), bool(row["all_day"])
        )
    problems += [f"{person.email}: unbound event {e}" for e in sorted(rows.keys() - seen)]
    return shown, ids, problems


def rename(pipeline: Pipeline, person: Person, event_id: str, title: str) -> None:
    """The user renames our event in the provider's UI."""
    if person.provider == "google":
        pipeline.control("google").update_event(person.email, event_id, {"summary": title})
    else:
        pipeline.control("microsoft").update_event(person.email, event_id, {"subject": title})


def delete(pipeline: Pipeline, person: Person, event_id: str) -> None:
    """The user deletes our event in the provider's UI."""
    if person.provider == "google":
        pipeline.control("google").delete_event(person.email, event_id)
    else:
        pipeline.control("microsoft").delete_event(person.email, event_id)


def write_fault(pipeline: Pipeline, rng: random.Random, provider: str) -> str:
    """One random fault on the provider's event writes; what it was."""
    control = pipeline.control(provider)
    google = provider == "google"
    path = "/calendar/v3/calendars/*/events*" if google else "/v1.0/me/*events*"
    method = rng.choice(("POST", "PATCH", "DELETE", "*"))
    roll = rng.random()
    if roll < 0.35:
        retry_after = rng.choice(("0.2", "0.5", "1"))
        kind = "rate_limit_429" if google else "throttled"
        control.add_fault(kind, method=method, path=path, retry_after=retry_after)
        return f"{provider} 429 {method} retry-after {retry_after}"
    if roll < 0.75:
        kinds = ("backend_error", "unavailable") if google else ("server_error", "unavailable")
        kind = rng.choice(kinds)
        count = rng.randint(1, 3)
        control.add_fault(kind, method=method, path=path, count=count)
        return f"{provider} {kind} x{count} {method}"
    people = [p for p in pipeline.people.values() if p.provider == provider]
    person = rng.choice(people)
    control.expire_access_tokens(person.email)
    return f"{provider} access token of {person.email} expired"
