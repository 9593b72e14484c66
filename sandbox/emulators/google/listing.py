"""events.list: query parsing, row building (instances, tombstones), filters, paging and sync
tokens (pure).

Invariants: rows are ordered by an immutable key and pages resume strictly after the last key,
so paging never skips an unchanged row; ``nextSyncToken`` appears only on the last page and
carries the calendar's ``seq`` as of the first page, so changes made while paging are reported
by the next incremental sync; ``nextPageToken`` and ``nextSyncToken`` never appear together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sandbox.emulators.shared.tokens import TokenError, decode_token, encode_token

from .errors import ApiError, bad_param, full_sync_required
from .store import CalendarRecord, EventRecord, Store, instance_body
from .times import format_utc, instant, parse_event_time, parse_rfc3339

DEFAULT_PAGE = 250
MAX_PAGE = 2500
FORBIDDEN_WITH_SYNC = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
# Initial queries with these filters get no nextSyncToken (providers.md A.2).
_SYNC_INCOMPATIBLE = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "updatedMin",
)
_STANDARD = frozenset(
    {
        "alt",
        "fields",
        "prettyPrint",
        "key",
        "quotaUser",
        "userIp",
        "oauth_token",
        "pageToken",
        "maxResults",
    }
)
_MINIMAL = ("kind", "etag", "id", "status")


@dataclass(frozen=True)
class ListQuery:
    single_events: bool = False
    show_deleted: bool | None = None
    time_min: datetime | None = None
    time_max: datetime | None = None
    updated_min: datetime | None = None
    max_results: int = DEFAULT_PAGE
    page_token: str | None = None
    sync_token: str | None = None
    order_by: str | None = None
    q: str | None = None
    ical_uid: str | None = None
    event_types: tuple[str, ...] = ()
    private_props: tuple[str, ...] = ()
    shared_props: tuple[str, ...] = ()
    fingerprint: str = ""
    sync_compatible: bool = True


@dataclass(frozen=True)
class PageOptions:
    """Fault-injected shaping of one page: force it empty, or cap its size."""

    force_empty: bool = False
    page_cap: int | None = None


@dataclass
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    next_page_token: str | None = None
    next_sync_token: str | None = None


@dataclass
class _Row:
    key: list[str]
    item: dict[str, Any]
    seq: int
    start: datetime | None
    end: datetime | None
    source: dict[str, Any]
    hidden_instance: bool = False


def parse_list_query(params: Sequence[tuple[str, str]]) -> ListQuery:
    """Validate events.list query parameters the way Google does; ApiError 400 otherwise."""
    one: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    for name, value in params:
        one.setdefault(name, value)
        many.setdefault(name, []).append(value)
    sync_token = one.get("syncToken")
    if sync_token is not None:
        for name in FORBIDDEN_WITH_SYNC:
            if name in one:
                raise bad_param(name, f"The parameter {name} cannot be used with syncToken.")
        if one.get("showDeleted", "").lower() == "false":
            raise bad_param("showDeleted", "showDeleted cannot be false when a syncToken is given.")
    single = _bool(one, "singleEvents") or False
    order_by = one.get("orderBy")
    if order_by not in (None, "startTime", "updated"):
        raise bad_param("orderBy", f"Invalid value for orderBy: {order_by}")
    if order_by == "startTime" and not single:
        raise ApiError(
            400, "badRequest", "The requested ordering is not available for the particular query."
        )
    time_min, time_max, updated_min = (_time(one, n) for n in ("timeMin", "timeMax", "updatedMin"))
    if time_min and time_max and time_min >= time_max:
        raise ApiError(
            400,
            "timeRangeEmpty",
            "The specified time range is empty.",
            location="timeMax",
            location_type="parameter",
        )
    try:
        max_results = int(one.get("maxResults", DEFAULT_PAGE))
    except ValueError as exc:
        raise bad_param("maxResults", "Invalid value for maxResults") from exc
    if max_results < 1:
        raise bad_param("maxResults", "Invalid value for maxResults")
    significant = sorted((n, v) for n, v in params if n not in _STANDARD)
    return ListQuery(
        single_events=single,
        show_deleted=_bool(one, "showDeleted"),
        time_min=time_min,
        time_max=time_max,
        updated_min=updated_min,
        max_results=min(max_results, MAX_PAGE),
        page_token=one.get("pageToken"),
        sync_token=sync_token,
        order_by=order_by,
        q=one.get("q"),
        ical_uid=one.get("iCalUID"),
        event_types=tuple(v for raw in many.get("eventTypes", []) for v in raw.split(",")),
        private_props=tuple(many.get("privateExtendedProperty", [])),
        shared_props=tuple(many.get("sharedExtendedProperty", [])),
        fingerprint=hashlib.sha256(repr(significant).encode()).hexdigest()[:16],
        sync_compatible=not any(name in one for name in _SYNC_INCOMPATIBLE),
    )


def list_events(
    store: Store,
    cal: CalendarRecord,
    query: ListQuery,
    key: bytes,
    *,
    options: PageOptions = PageOptions(),
    sync_token_max_age: timedelta | None = None,
) -> Page:
    """One page of events.list for ``query``."""
    since = None
    if query.sync_token is not None:
        since = _check_sync_token(store, cal, query.sync_token, key, sync_token_max_age)
    cursor: list[str] | None = None
    snapshot = cal.seq
    if query.page_token is not None:
        try:
            state = decode_token(query.page_token, key)
        except TokenError as exc:
            raise bad_param("pageToken", "Invalid page token") from exc
        if state.get("f") != query.fingerprint or state.get("c") != cal.id:
            raise bad_param("pageToken", "Invalid page token")
        cursor, snapshot = state["k"], int(state["s"])
    rows = sorted(_select(store, cal, query, since), key=lambda r: r.key)
    if cursor is not None:
        rows = [r for r in rows if r.key > cursor]
    size = min(query.max_results, options.page_cap or MAX_PAGE)
    page_rows = [] if options.force_empty else rows[:size]
    page = Page(items=[r.item for r in page_rows])
    if options.force_empty or len(rows) > size:
        last = page_rows[-1].key if page_rows else cursor
        page.next_page_token = encode_token(
            {"c": cal.id, "k": last, "s": snapshot, "f": query.fingerprint}, key
        )
    elif query.sync_compatible:
        now_ms = int(store.clock.now().timestamp() * 1000)
        page.next_sync_token = encode_token({"c": cal.id, "s": snapshot, "t": now_ms}, key)
    return page


def events_envelope(cal: CalendarRecord, page: Page) -> dict[str, Any]:
    """The ``Events`` collection resource around one page."""
    out: dict[str, Any] = {
        "kind": "calendar#events",
        "etag": cal.etag,
        "summary": cal.summary,
        "description": "",
        "updated": format_utc(cal.updated),
        "timeZone": cal.time_zone,
        "accessRole": cal.access_role,
        "defaultReminders": [{"method": "popup", "minutes": 10}],
    }
    if page.next_page_token:
        out["nextPageToken"] = page.next_page_token
    if page.next_sync_token:
        out["nextSyncToken"] = page.next_sync_token
    out["items"] = page.items
    return out


def _check_sync_token(
    store: Store, cal: CalendarRecord, token: str, key: bytes, max_age: timedelta | None
) -> int:
    """The seq a sync token stands for, or 410 if it is foreign, invalidated or too old."""
    try:
        state = decode_token(token, key)
        seq, issued_ms = int(state["s"]), int(state["t"])
    except (TokenError, KeyError, TypeError, ValueError) as exc:
        raise full_sync_required() from exc
    if state.get("c") != cal.id or seq > cal.seq:
        raise full_sync_required()
    if seq < cal.sync_floor:
        raise full_sync_required(with_reason=cal.floor_with_reason)
    now_ms = store.clock.now().timestamp() * 1000
    if max_age is not None and now_ms - issued_ms > max_age.total_seconds() * 1000:
        raise full_sync_required()
    return seq


def _select(
    store: Store, cal: CalendarRecord, query: ListQuery, since: int | None
) -> Iterable[_Row]:
    for row in _rows(store, cal, query.single_events):
        row.key = _order_key(query.order_by, row)
        cancelled = row.item.get("status") == "cancelled"
        if since is not None:
            if row.seq > since:
                yield row
            continue
        # A cancelled instance of a live series shows even without showDeleted (non-single mode).
        if cancelled and not query.show_deleted and not row.hidden_instance:
            continue
        if _matches(row, query, cancelled):
            yield row


def _matches(row: _Row, query: ListQuery, cancelled: bool) -> bool:
    if query.time_min and row.end and row.end <= query.time_min:
        return False
    if query.time_max and row.start and row.start >= query.time_max:
        return False
    if (
        query.updated_min
        and not cancelled
        and parse_rfc3339(row.source["updated"]) < query.updated_min
    ):
        return False
    if cancelled:
        return True
    src = row.source
    if query.q:
        text = " ".join(str(src.get(k, "")) for k in ("summary", "description", "location")).lower()
        if query.q.lower() not in text:
            return False
    if query.ical_uid and src.get("iCalUID") != query.ical_uid:
        return False
    if query.event_types and src.get("eventType", "default") not in query.event_types:
        return False
    props = src.get("extendedProperties") or {}
    # Repeated constraints must all match, as the events.list reference says (the
    # extended-properties guide says OR instead; the reference is the contract here).
    for scope, wanted in (("private", query.private_props), ("shared", query.shared_props)):
        for pair in wanted:
            name, _, value = pair.partition("=")
            if (props.get(scope) or {}).get(name) != value:
                return False
    return True


def single_event_rows(store: Store, cal: CalendarRecord) -> list[_Row]:
    """Every row of a ``singleEvents=true`` listing before filters and paging: singles, each
    series' instances (its exceptions applied) and tombstones; ``source`` is the full body."""
    return list(_rows(store, cal, single_events=True))


def _rows(store: Store, cal: CalendarRecord, single_events: bool) -> Iterable[_Row]:
    for record in cal.events.values():
        if record.is_exception:
            if not single_events:
                row = _row(cal, record.body, record.seq)
                master = cal.events.get(record.body["recurringEventId"])
                row.hidden_instance = master is not None and not master.cancelled
                yield row
        elif single_events and record.is_series:
            yield from _instance_rows(store, cal, record)
        else:
            yield _row(
                cal, record.body, record.seq, series_store=store if record.is_series else None
            )


def _instance_rows(store: Store, cal: CalendarRecord, master: EventRecord) -> Iterable[_Row]:
    master_id = master.body["id"]
    exceptions = {r.body["id"]: r for r in store.exceptions_of(cal, master_id)}
    for occurrence in store.occurrences(master.body):
        body = instance_body(master.body, occurrence)
        exception = exceptions.pop(body["id"], None)
        if master.cancelled:
            seq = max(master.seq, exception.seq if exception else 0)
            yield _row(cal, body, seq)
        elif exception is not None:
            yield _row(cal, exception.body, exception.seq)
        else:
            yield _row(cal, body, master.seq)
    for exception in exceptions.values():
        # Exceptions outside the expansion (moved far away) still exist as events.
        yield _row(cal, exception.body, exception.seq)
    for iid, (original, seq) in master.removed.items():
        gone = {
            "kind": "calendar#event",
            "id": iid,
            "status": "cancelled",
            "etag": master.body["etag"],
        }
        yield _Row(
            [iid],
            {**gone, "recurringEventId": master_id, "originalStartTime": original},
            seq,
            None,
            None,
            gone,
        )


def _row(
    cal: CalendarRecord, body: dict[str, Any], seq: int, series_store: Store | None = None
) -> _Row:
    start_value, tz_name = parse_event_time(body["start"], cal.time_zone)
    end_value, _ = parse_event_time(body["end"], tz_name)
    start, end = instant(start_value, tz_name), instant(end_value, tz_name)
    if series_store is not None:
        # A series spans from its first start to its last occurrence's end within the horizon.
        occurrences = series_store.occurrences(body)
        if occurrences:
            end = instant(occurrences[-1].end, tz_name)
    item = body
    if body.get("status") == "cancelled":
        item = {k: body[k] for k in _MINIMAL if k in body}
        item["status"] = "cancelled"
        if "recurringEventId" in body:
            item["recurringEventId"] = body["recurringEventId"]
            item["originalStartTime"] = body["originalStartTime"]
    return _Row([body["id"]], item, seq, start, end, body)


def _order_key(order_by: str | None, row: _Row) -> list[str]:
    """The sort key for an ordering; the event id breaks ties so keys are unique."""
    if order_by == "startTime" and row.start is not None:
        return [format_utc(row.start), row.item["id"]]
    if order_by == "updated":
        return [str(row.source.get("updated", "")), row.item["id"]]
    return [row.item["id"]]


def _bool(one: dict[str, str], name: str) -> bool | None:
    raw = one.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false"):
        raise bad_param(name, f"Invalid boolean value for {name}")
    return raw.lower() == "true"


def _time(one: dict[str, str], name: str) -> datetime | None:
    raw = one.get(name)
    if raw is None:
        return None
    try:
        return parse_rfc3339(raw)
    except ValueError as exc:
        raise bad_param(
            name, f"Bad Request: {name} must be RFC3339 with a time zone offset"
        ) from exc
