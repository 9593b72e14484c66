"""Control surface of the Google emulator: a Python object and the same operations over HTTP.

Invariants: control routes are never authenticated nor faulted; acting "as the user in Google's
UI" goes through the same Store operations as the API, so it bumps the change log and fires
push notifications exactly like an API write.

HTTP control API (JSON bodies and answers; errors use the Google envelope; base ``/_control/``):

- ``POST clients`` ``{"client_id", "client_secret", "project_number"?}`` -> the client.
- ``POST users`` ``{"email", "client_id", "refresh_token"?, "scopes"?: [..], "time_zone"?}``
  -> ``{"email", "client_id", "refresh_token", "calendar_id"}`` (client must exist).
- ``POST users/{email}/calendars`` ``{"summary", "time_zone"?, "id"?}`` -> ``{"id", ...}``.
- ``POST calendars/{cal}/events`` event body -> event (as the user in Google's UI).
- ``PATCH calendars/{cal}/events/{id}`` patch -> event; an instance id
  ``<master>_<YYYYMMDDTHHMMSSZ|YYYYMMDD>`` creates or edits that occurrence's exception.
- ``DELETE calendars/{cal}/events/{id}`` -> 204; an instance id cancels one occurrence.
- ``GET calendars/{cal}/events`` -> ``{"items": [stored events, cancelled ones included]}``.
- ``GET calendars/{cal}/export?timeMin=..&timeMax=..`` -> ``{"items": [export rows]}``: the live
  events a person sees in the window, series expanded (see ``Control.export``).
- ``POST calendars/{cal}/invalidate_sync_tokens`` ``{"with_reason"?: true}`` -> 204; the next
  incremental sync gets 410 (with or without the ``fullSyncRequired`` reason).
- ``POST refresh_tokens/revoke`` ``{"refresh_token"}`` -> 204.
- ``POST access_tokens/expire`` ``{"email"?}`` -> ``{"expired": n}``.
- ``POST faults`` ``{"kind", "method"?: "*", "path"?: "*", "count"?: 1 (null: forever),
  "retry_after"?, "delay_s"?, "page_size"?}`` -> ``{"id"}``. Kinds: ``rate_limit`` (403),
  ``user_rate_limit`` (403), ``rate_limit_429`` (429), ``quota_exceeded`` (403),
  ``backend_error`` (500), ``unavailable`` (503), ``latency`` (delay_s), ``malformed_json``,
  ``malformed_item`` (the first item's ``start`` not an object), ``empty_page`` (an empty
  page that still has a nextPageToken), ``page_size`` (cap a page).
  ``path`` is a glob over the request path, e.g. ``/calendar/v3/calendars/*/events``.
- ``DELETE faults`` -> 204.
- ``POST quotas`` ``{"email", "requests": n | null, "window_s"?: 60}`` -> 204: a per-user rate
  limit; past it the API answers 403 ``userRateLimitExceeded`` without Retry-After.
- ``GET calls?email=`` -> ``{"items": [{"at" (monotonic s), "email", "method", "path",
  "refused"}]}``: every authenticated API call.
- ``POST push`` ``{"drop"?: n, "duplicate"?: n, "max_lifetime_s"?: s | null, "delay_s"?:
  [low, high]}`` -> 204: drop or duplicate the next n notifications; grant channels at most
  that lifetime; deliver each message after a random delay in that range.
- ``GET channels`` -> ``{"items": [api#channel + "address", "calendarId"]}``;
  ``GET deliveries`` -> ``{"items": [{"channel_id","state","number","outcome","attempts"}]}``.
- ``POST clock`` ``{"now"?: RFC 3339 | null, "advance_s"?: seconds}`` -> ``{"now"}``.
- ``POST sign_ins`` ``{"email"?, "deny"?: false}`` -> 204: the next authorization (``GET
  /o/oauth2/v2/auth``) approves that user (or the ``login_hint``, or the sole user), or
  redirects with ``error=access_denied``; queued sign-ins are used in order.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from sandbox.emulators.shared.authorization import SignIn

from . import recurrence
from .backend import ApiCall, Backend, UserQuota
from .errors import ApiError
from .listing import single_event_rows
from .store import DEFAULT_SCOPES, CalendarRecord
from .times import parse_rfc3339

PREFIX = "/_control/"


class Control:
    """In-process control of one emulator (tests and the demo)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._store = backend.store

    def add_client(
        self, client_id: str, client_secret: str, project_number: str | None = None
    ) -> dict[str, str]:
        client = self._store.add_client(client_id, client_secret, project_number)
        return asdict(client)

    def add_user(
        self,
        email: str,
        client_id: str,
        *,
        refresh_token: str | None = None,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        time_zone: str = "UTC",
    ) -> dict[str, str]:
        """A user with a primary calendar and a refresh token for ``client_id``."""
        if client_id not in self._store.clients:
            raise KeyError(f"unknown client {client_id!r}")
        if email not in self._store.user_calendars:
            self._store.add_user(email, time_zone)
        token = self._store.grant_refresh_token(email, client_id, scopes, refresh_token)
        return {
            "email": email,
            "client_id": client_id,
            "refresh_token": token,
            "calendar_id": email,
        }

    def add_calendar(
        self,
        email: str,
        summary: str,
        time_zone: str = "UTC",
        calendar_id: str | None = None,
        *,
        access_role: str = "owner",
    ) -> dict[str, Any]:
        """A calendar on the user's list; ``access_role`` their role in it (a holiday
        calendar: ``reader``)."""
        cal = self._store.add_calendar(
            email, summary, time_zone, calendar_id=calendar_id, access_role=access_role
        )
        return {"id": cal.id, "summary": cal.summary, "timeZone": cal.time_zone}

    def rename_calendar(self, calendar_id: str, summary: str) -> None:
        """The owner renames a calendar (its ``summary``, as calendarList lists it)."""
        self._calendar(calendar_id).summary = summary

    def unsubscribe(self, email: str, calendar_id: str) -> None:
        """The user removes a calendar from their list; its channels keep running."""
        self._store.unsubscribe(email, calendar_id)

    def create_event(self, calendar_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._store.insert_event(self._calendar(calendar_id), body)

    def update_event(
        self, calendar_id: str, event_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Patch an event; an instance id makes (or edits) that occurrence's exception."""
        cal = self._calendar(calendar_id)
        return self._store.write_event(cal, event_id, changes, replace=False, if_match=None)

    def delete_event(self, calendar_id: str, event_id: str) -> None:
        """Delete an event or series; an instance id cancels that one occurrence."""
        self._store.delete_event(self._calendar(calendar_id), event_id)

    def modify_instance(
        self,
        calendar_id: str,
        master_id: str,
        original_start: datetime | date,
        changes: dict[str, Any],
    ) -> dict[str, Any]:
        return self.update_event(
            calendar_id, recurrence.instance_id(master_id, original_start), changes
        )

    def cancel_instance(
        self, calendar_id: str, master_id: str, original_start: datetime | date
    ) -> None:
        self.delete_event(calendar_id, recurrence.instance_id(master_id, original_start))

    def events(self, calendar_id: str) -> list[dict[str, Any]]:
        """Every stored event of a calendar (masters, exceptions, cancelled tombstones)."""
        cal = self._calendar(calendar_id)
        return [copy.deepcopy(r.body) for r in cal.events.values()]

    def export(self, calendar_id: str, window: tuple[datetime, datetime]) -> list[dict[str, Any]]:
        """The calendar's live events overlapping ``window`` as a person sees them, by id.

        Series are expanded into instances with the emulator's own recurrence code (exceptions
        and cancelled occurrences applied); cancelled events are left out. The overlap rule is
        events.list's (``end > timeMin`` and ``start < timeMax``). Rows have the shape of
        ``integration-worker events export`` without provider and account: ``calendar_id``,
        ``event_id``, ``status``, ``start``/``end`` (UTC instants ending in ``Z``, or dates for
        all-day events, end exclusive), ``all_day``, ``summary``, plus the ``etag`` served.
        """
        cal = self._calendar(calendar_id)
        low, high = window
        rows: list[dict[str, Any]] = []
        for row in single_event_rows(self._store, cal):
            body = row.source
            if body.get("status") == "cancelled" or row.start is None or row.end is None:
                continue
            if row.end <= low or row.start >= high:
                continue
            all_day = "date" in body["start"]
            rows.append(
                {
                    "calendar_id": cal.id,
                    "event_id": body["id"],
                    "status": body.get("status", "confirmed"),
                    "start": body["start"]["date"] if all_day else _utc(row.start),
                    "end": body["end"]["date"] if all_day else _utc(row.end),
                    "all_day": all_day,
                    "summary": body.get("summary"),
                    "etag": body.get("etag"),
                }
            )
        return sorted(rows, key=lambda r: str(r["event_id"]))

    def revoke_refresh_token(self, refresh_token: str) -> None:
        self._store.revoke(refresh_token)

    def expire_access_tokens(self, email: str | None = None) -> int:
        return self._store.expire_access_tokens(email)

    def invalidate_sync_tokens(self, calendar_id: str, *, with_reason: bool = True) -> None:
        self._store.invalidate_sync_tokens(self._calendar(calendar_id).id, with_reason=with_reason)

    def add_fault(
        self,
        kind: str,
        *,
        method: str = "*",
        path: str = "*",
        count: int | None = 1,
        retry_after: str | None = None,
        delay_s: float = 0.0,
        page_size: int | None = None,
    ) -> int:
        fault = self._backend.faults.add(
            kind,
            method=method,
            path=path,
            count=count,
            retry_after=retry_after,
            delay_s=delay_s,
            page_size=page_size,
        )
        return fault.id

    def set_user_quota(self, email: str, requests: int | None, window_s: float = 60.0) -> None:
        """Limit ``email`` to ``requests`` API calls per ``window_s`` (None: no limit); past
        it the API answers 403 userRateLimitExceeded without Retry-After."""
        if requests is None:
            self._backend.quotas.pop(email, None)
        else:
            self._backend.quotas[email] = UserQuota(requests, window_s)

    def calls(self, email: str | None = None) -> list[ApiCall]:
        """The authenticated API calls so far (of ``email``), oldest first."""
        return [c for c in self._backend.calls if email in (None, c.email)]

    def clear_faults(self) -> None:
        self._backend.faults.clear()

    def drop_notifications(self, count: int) -> None:
        self._backend.hub.drop_next += count

    def duplicate_notifications(self, count: int) -> None:
        self._backend.hub.duplicate_next += count

    def refuse_watch(self, calendar_id: str) -> None:
        """events.watch on the calendar answers 400 pushNotSupportedForRequestedResource."""
        self._backend.hub.unwatchable.add(calendar_id)

    def grant_channel_lifetime(self, max_s: float | None) -> None:
        """Grant watch channels at most ``max_s`` seconds (None: as asked), as Google may
        return an ``expiration`` earlier than the one asked for."""
        self._backend.hub.max_lifetime_s = max_s

    def delay_notifications(self, low_s: float, high_s: float) -> None:
        """Deliver each later message after a random delay in ``[low_s, high_s]``."""
        if not 0 <= low_s <= high_s:
            raise ValueError("delays must satisfy 0 <= low_s <= high_s")
        self._backend.hub.delivery_delay_s = (low_s, high_s)

    def channels(self) -> list[dict[str, Any]]:
        return [
            {**c.resource(), "address": c.address, "calendarId": c.calendar_id}
            for c in self._backend.hub.channels.values()
        ]

    def deliveries(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self._backend.hub.deliveries]

    def now(self) -> datetime:
        return self._store.clock.now()

    def set_now(self, moment: datetime | None) -> None:
        """Freeze the emulator clock at ``moment`` (aware), or back to real time with None."""
        self._store.clock.set_now(moment)

    def advance(self, seconds: float) -> None:
        self._store.clock.advance(timedelta(seconds=seconds))

    def queue_sign_in(self, email: str | None = None, *, deny: bool = False) -> None:
        """What the next authorization does, as the user in Google's consent screen."""
        if email is not None and email not in self._store.user_calendars:
            raise KeyError(f"unknown user {email!r}")
        self._backend.authorizations.queue_sign_in(SignIn(email, deny))

    def _calendar(self, calendar_id: str) -> CalendarRecord:
        cal = self._store.calendars.get(calendar_id)
        if cal is None:
            raise KeyError(f"unknown calendar {calendar_id!r}")
        return cal


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_Route = Callable[[Control, web.Request, dict[str, Any]], Awaitable[Any]]
CONTROL = web.AppKey("google_emulator_control", Control)


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, _Route]] = [
        ("POST", "clients", _clients),
        ("POST", "users", _users),
        ("POST", "users/{email}/calendars", _calendars),
        ("POST", "calendars/{cal}/events", _create),
        ("GET", "calendars/{cal}/events", _events),
        ("GET", "calendars/{cal}/export", _export),
        ("PATCH", "calendars/{cal}/events/{event}", _update),
        ("DELETE", "calendars/{cal}/events/{event}", _delete),
        ("POST", "calendars/{cal}/invalidate_sync_tokens", _invalidate),
        ("POST", "refresh_tokens/revoke", _revoke),
        ("POST", "access_tokens/expire", _expire),
        ("POST", "faults", _add_fault),
        ("DELETE", "faults", _clear_faults),
        ("POST", "quotas", _quota),
        ("GET", "calls", _calls),
        ("POST", "push", _push),
        ("GET", "channels", _channels),
        ("GET", "deliveries", _deliveries),
        ("POST", "clock", _clock),
        ("POST", "sign_ins", _sign_ins),
    ]
    for method, path, route in routes:
        app.router.add_route(method, PREFIX + path, _wrap(route))


def _wrap(route: _Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, "parseError", "Parse Error") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "parseError", "a JSON object is required")
        try:
            result = await route(request.app[CONTROL], request, body)
        except KeyError as exc:
            raise ApiError(404, "notFound", str(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "invalid", str(exc)) from exc
        if result is None:
            return web.Response(status=204)
        return web.json_response(result)

    return handler


async def _clients(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    return c.add_client(b["client_id"], b["client_secret"], b.get("project_number"))


async def _users(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    scopes = tuple(b.get("scopes") or DEFAULT_SCOPES)
    return c.add_user(
        b["email"],
        b["client_id"],
        refresh_token=b.get("refresh_token"),
        scopes=scopes,
        time_zone=b.get("time_zone", "UTC"),
    )


async def _calendars(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    return c.add_calendar(
        r.match_info["email"], b["summary"], b.get("time_zone", "UTC"), b.get("id")
    )


async def _create(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    return c.create_event(r.match_info["cal"], b)


async def _events(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    return {"items": c.events(r.match_info["cal"])}


async def _export(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    window = (parse_rfc3339(r.query["timeMin"]), parse_rfc3339(r.query["timeMax"]))
    return {"items": c.export(r.match_info["cal"], window)}


async def _update(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    return c.update_event(r.match_info["cal"], r.match_info["event"], b)


async def _delete(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    c.delete_event(r.match_info["cal"], r.match_info["event"])


async def _invalidate(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    c.invalidate_sync_tokens(r.match_info["cal"], with_reason=bool(b.get("with_reason", True)))


async def _revoke(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.revoke_refresh_token(b["refresh_token"])


async def _expire(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    return {"expired": c.expire_access_tokens(b.get("email"))}


async def _add_fault(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    fault_id = c.add_fault(
        b["kind"],
        method=b.get("method", "*"),
        path=b.get("path", "*"),
        count=b.get("count", 1),
        retry_after=None if b.get("retry_after") is None else str(b["retry_after"]),
        delay_s=float(b.get("delay_s", 0.0)),
        page_size=b.get("page_size"),
    )
    return {"id": fault_id}


async def _clear_faults(c: Control, _: web.Request, __: dict[str, Any]) -> Any:
    c.clear_faults()


async def _quota(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    requests = b.get("requests")
    c.set_user_quota(
        str(b["email"]),
        None if requests is None else int(requests),
        float(b.get("window_s", 60.0)),
    )


async def _calls(c: Control, request: web.Request, __: dict[str, Any]) -> Any:
    return {
        "items": [
            {"at": x.at, "email": x.email, "method": x.method, "path": x.path, "refused": x.refused}
            for x in c.calls(request.query.get("email"))
        ]
    }


async def _push(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.drop_notifications(int(b.get("drop", 0)))
    c.duplicate_notifications(int(b.get("duplicate", 0)))
    if "max_lifetime_s" in b:
        lifetime = b["max_lifetime_s"]
        c.grant_channel_lifetime(None if lifetime is None else float(lifetime))
    if "delay_s" in b:
        low, high = b["delay_s"]
        c.delay_notifications(float(low), float(high))


async def _channels(c: Control, _: web.Request, __: dict[str, Any]) -> Any:
    return {"items": c.channels()}


async def _deliveries(c: Control, _: web.Request, __: dict[str, Any]) -> Any:
    return {"items": c.deliveries()}


async def _clock(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    if "now" in b:
        c.set_now(None if b["now"] is None else parse_rfc3339(b["now"]))
    if b.get("advance_s"):
        c.advance(float(b["advance_s"]))
    return {"now": c.now().isoformat()}


async def _sign_ins(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.queue_sign_in(b.get("email"), deny=bool(b.get("deny", False)))
