"""Control surface of the Microsoft emulator: a Python object and the same operations over HTTP.

Invariants: control routes are never authenticated nor faulted; acting "as the user in Outlook"
goes through the same Store operations as the Graph API, so it bumps change keys, changes the
next delta round and fires change notifications exactly like an API write. Users are named by
their UPN; events by their Graph id (``occurrence_id`` names one occurrence of a series).

HTTP control API (JSON bodies and answers; errors use the Graph envelope; base ``/_control/``):

- ``POST clients`` ``{"client_id", "client_secret"}`` -> ``{"client_id", "client_secret"}``.
- ``POST users`` ``{"upn", "client_id", "refresh_token"?, "tenant_id"?, "display_name"?}``
  -> ``{"id", "upn", "tenant_id", "client_id", "refresh_token", "calendar_id"}``.
- ``POST users/{upn}/refresh_tokens`` ``{"client_id"}`` -> ``{"refresh_token"}`` (new family).
- ``POST users/{upn}/calendars`` ``{"name"}`` -> the calendar resource.
- ``POST users/{upn}/events`` event body (+ ``"calendar_id"``?) -> the event (UTC).
- ``PATCH users/{upn}/events/{id}`` changes -> the event; an occurrence id makes an exception.
- ``DELETE users/{upn}/events/{id}`` -> 204; an occurrence id cancels that occurrence.
- ``GET users/{upn}/events`` -> ``{"value": [stored events, masters and exceptions, UTC]}``.
- ``GET users/{upn}/export?startDateTime=..&endDateTime=..&calendar_id=..`` -> ``{"value":
  [export rows]}``: the calendar view a person sees in the window (see ``Control.export``).
- ``POST occurrence_id`` ``{"master_id", "original_start"}`` -> ``{"id"}`` (ISO instant).
- ``POST users/{upn}/invalidate_delta`` ``{"code"?: "SyncStateNotFound"|"resyncRequired"}``
  -> ``{"invalidated": n}``: every delta/skip token of the user now gets 410.
- ``POST users/{upn}/block`` ``{"block": "mfa"|"interaction_required"|"consent_required"|null}``
  -> 204: the next refresh fails with invalid_grant 50076 (+suberror), 50079 or 65001.
- ``POST users/{upn}/revoke`` -> 204: revokeSignInSessions (every RT and AT of the user).
- ``POST refresh_tokens/revoke`` ``{"refresh_token"}`` -> 204 (its whole family).
- ``POST access_tokens/expire`` ``{"upn"?}`` -> ``{"expired": n}``.
- ``POST delta`` ``{"replay_next"?: n}`` -> 204: the next n delta rounds repeat the previous
  round's changes.
- ``POST faults`` ``{"kind", "method"?: "*", "path"?: "*", "count"?: 1 (null: forever),
  "retry_after"?: "2.128" ("" for none), "delay_s"?, "page_size"?}`` -> ``{"id"}``. Kinds:
  ``throttled`` (429 TooManyRequests, Retry-After 2.128 unless given), ``unavailable`` (503),
  ``server_error`` (500), ``gateway_timeout`` (504), ``latency`` (delay_s),
  ``malformed_json`` (truncated 2xx body), ``malformed_item`` (the first item's ``start``
  not an object), ``empty_page`` (a delta page with no items that still has a nextLink),
  ``page_size`` (cap delta pages). ``path`` is a glob over the request path,
  e.g. ``/v1.0/me/calendarView/delta`` or ``/*/oauth2/v2.0/token`` (identity paths answer in the
  OAuth error shape).
- ``DELETE faults`` -> 204.
- ``POST notifications`` ``{"drop"?: n, "duplicate"?: n}`` -> 204: drop or duplicate the next n
  change or lifecycle notifications.
- ``POST subscriptions/{id}/lifecycle`` ``{"event": "reauthorizationRequired" |
  "subscriptionRemoved" | "missed"}`` -> 204.
- ``GET subscriptions`` -> ``{"value": [subscription resources]}``;
  ``GET deliveries`` -> ``{"value": [{"url","kind","items","outcome","attempts","statuses"}]}``.
- ``POST clock`` ``{"now"?: ISO instant | null, "advance_s"?: seconds}`` -> ``{"now"}``.
- ``POST sign_ins`` ``{"upn"?, "deny"?: false}`` -> 204: the next authorization (``GET
  /{tenant}/oauth2/v2.0/authorize``) approves that user (or the ``login_hint``, or the sole
  user), or redirects with ``error=access_denied``; queued sign-ins are used in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sandbox.emulators.shared.authorization import SignIn

from .backend import Backend
from .delta import SYNC_STATE_NOT_FOUND
from .errors import GraphError
from .identity import DEFAULT_TENANT, User
from .store import occurrence_id
from .times import format_timestamp, parse_timestamp

PREFIX = "/_control/"


class Control:
    """In-process control of one emulator (tests and the demo)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._dir = backend.directory
        self._store = backend.store

    def add_client(self, client_id: str, client_secret: str) -> dict[str, str]:
        return asdict(self._dir.add_app(client_id, client_secret))

    def add_user(
        self,
        upn: str,
        client_id: str,
        *,
        refresh_token: str | None = None,
        tenant_id: str | None = None,
        display_name: str | None = None,
    ) -> dict[str, str]:
        """A user with a default calendar and a refresh token for ``client_id``."""
        if client_id not in self._dir.apps:
            raise KeyError(f"unknown client {client_id!r}")
        user = self._dir.user_by_upn(upn)
        if user is None:
            user = self._dir.add_user(upn, tenant_id or DEFAULT_TENANT, display_name)
            self._store.add_user(user.id, user.upn, user.display_name)
        token = self._dir.grant(user.id, client_id, refresh_token)
        return {
            "id": user.id,
            "upn": user.upn,
            "tenant_id": user.tenant_id,
            "client_id": client_id,
            "refresh_token": token,
            "calendar_id": self._store.default_calendar(user.id).id,
        }

    def grant_refresh_token(self, upn: str, client_id: str) -> str:
        return self._dir.grant(self._user(upn).id, client_id)

    def add_calendar(self, upn: str, name: str) -> dict[str, Any]:
        cal = self._store.add_calendar(self._user(upn).id, name)
        return self._store.calendar_resource(cal)

    def create_event(
        self, upn: str, body: dict[str, Any], calendar_id: str | None = None
    ) -> dict[str, Any]:
        user = self._user(upn)
        cal = (
            self._store.default_calendar(user.id)
            if calendar_id is None
            else self._store.calendar(user.id, calendar_id)
        )
        record, _ = self._store.create_event(cal, body)
        return self._store.render(record)

    def update_event(self, upn: str, event_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Patch an event; an occurrence id makes (or edits) that occurrence's exception."""
        record = self._store.update_event(self._user(upn).id, event_id, changes, None)
        return self._store.render(record)

    def delete_event(self, upn: str, event_id: str) -> None:
        """Delete an event or series; an occurrence id cancels that one occurrence."""
        self._store.delete_event(self._user(upn).id, event_id)

    def occurrence_id(self, master_id: str, original_start: datetime) -> str:
        return occurrence_id(master_id, original_start)

    def modify_occurrence(
        self, upn: str, master_id: str, original_start: datetime, changes: dict[str, Any]
    ) -> dict[str, Any]:
        return self.update_event(upn, occurrence_id(master_id, original_start), changes)

    def cancel_occurrence(self, upn: str, master_id: str, original_start: datetime) -> None:
        self.delete_event(upn, occurrence_id(master_id, original_start))

    def events(self, upn: str) -> list[dict[str, Any]]:
        """Every live stored event of the user (singles, masters, exceptions), UTC."""
        user = self._user(upn)
        return [
            self._store.render(r)
            for r in self._store.events.values()
            if r.owner == user.id and not r.deleted
        ]

    def export(
        self, upn: str, window: tuple[datetime, datetime], calendar_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The calendar's view over ``window`` as a person sees it, by id (default calendar
        unless ``calendar_id``).

        It is calendarView's own computation (singles, the series' occurrences expanded with
        the emulator's recurrence code, exceptions, cancelled occurrences left out). Rows have
        the shape of ``integration-worker events export`` without provider and account:
        ``calendar_id`` (Graph's id), ``event_id``, ``status``, ``start``/``end`` (UTC instants
        ending in ``Z``, or for all-day events the dates as rendered in UTC, end exclusive),
        ``all_day``, ``summary``, plus the ``etag`` served.
        """
        user = self._user(upn)
        cal = (
            self._store.default_calendar(user.id)
            if calendar_id is None
            else self._store.calendar(user.id, calendar_id)
        )
        rows: list[dict[str, Any]] = []
        for inst in self._store.view(user.id, cal.id, window).values():
            resource = inst.resource
            all_day = bool(resource.get("isAllDay"))
            rows.append(
                {
                    "calendar_id": cal.id,
                    "event_id": inst.id,
                    "status": "cancelled" if resource.get("isCancelled") else "confirmed",
                    "start": _day(resource["start"]) if all_day else _utc(inst.start),
                    "end": _day(resource["end"]) if all_day else _utc(inst.end),
                    "all_day": all_day,
                    "summary": resource.get("subject"),
                    "etag": resource.get("@odata.etag"),
                }
            )
        return sorted(rows, key=lambda r: str(r["event_id"]))

    def invalidate_delta_tokens(self, upn: str, code: str = SYNC_STATE_NOT_FOUND) -> int:
        return self._backend.delta.invalidate(self._user(upn).id, code)

    def replay_delta_rounds(self, count: int) -> None:
        self._backend.delta.replay_next += count

    def set_block(self, upn: str, block: str | None) -> None:
        """``mfa`` / ``interaction_required`` / ``consent_required`` at refresh, or None."""
        self._dir.set_block(self._user(upn).id, block)

    def require_mfa(self, upn: str, required: bool = True) -> None:
        self.set_block(upn, "mfa" if required else None)

    def revoke_refresh_token(self, refresh_token: str) -> None:
        self._dir.revoke(refresh_token)

    def revoke_sessions(self, upn: str) -> None:
        self._dir.revoke_user(self._user(upn).id)

    def expire_access_tokens(self, upn: str | None = None) -> int:
        return self._dir.expire_access_tokens(None if upn is None else self._user(upn).id)

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

    def clear_faults(self) -> None:
        self._backend.faults.clear()

    def drop_notifications(self, count: int) -> None:
        self._backend.hub.drop_next += count

    def duplicate_notifications(self, count: int) -> None:
        self._backend.hub.duplicate_next += count

    def fire_lifecycle(self, subscription_id: str, event: str) -> None:
        self._backend.hub.fire_lifecycle(subscription_id, event)

    def subscriptions(self) -> list[dict[str, Any]]:
        base = f"{self._backend.origin}/v1.0/"
        return [s.to_json(base) for s in self._backend.hub.subscriptions.values()]

    def deliveries(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self._backend.hub.deliveries]

    def now(self) -> datetime:
        return self._backend.clock.now()

    def set_now(self, moment: datetime | None) -> None:
        self._backend.clock.set_now(moment)

    def advance(self, seconds: float) -> None:
        self._backend.clock.advance(timedelta(seconds=seconds))

    def queue_sign_in(self, upn: str | None = None, *, deny: bool = False) -> None:
        """What the next authorization does, as the user on the sign-in and consent pages."""
        if upn is not None:
            self._user(upn)  # KeyError for an unknown user
        self._dir.authorizations.queue_sign_in(SignIn(upn, deny))

    def _user(self, upn: str) -> User:
        user = self._dir.user_by_upn(upn)
        if user is None:
            raise KeyError(f"unknown user {upn!r}")
        return user


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(edge: dict[str, Any]) -> str:
    """The date of a UTC-rendered all-day edge (its ``dateTime`` is that day's midnight)."""
    return str(edge["dateTime"])[:10]


_Route = Callable[[Control, web.Request, dict[str, Any]], Awaitable[Any]]
CONTROL = web.AppKey("microsoft_emulator_control", Control)


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, _Route]] = [
        ("POST", "clients", _clients),
        ("POST", "users", _users),
        ("POST", "users/{upn}/refresh_tokens", _grant),
        ("POST", "users/{upn}/calendars", _calendars),
        ("POST", "users/{upn}/events", _create),
        ("GET", "users/{upn}/events", _events),
        ("GET", "users/{upn}/export", _export),
        ("PATCH", "users/{upn}/events/{event}", _update),
        ("DELETE", "users/{upn}/events/{event}", _delete),
        ("POST", "occurrence_id", _occurrence_id),
        ("POST", "users/{upn}/invalidate_delta", _invalidate),
        ("POST", "users/{upn}/block", _block),
        ("POST", "users/{upn}/revoke", _revoke_user),
        ("POST", "refresh_tokens/revoke", _revoke),
        ("POST", "access_tokens/expire", _expire),
        ("POST", "delta", _delta),
        ("POST", "faults", _add_fault),
        ("DELETE", "faults", _clear_faults),
        ("POST", "notifications", _notifications),
        ("POST", "subscriptions/{sub}/lifecycle", _lifecycle),
        ("GET", "subscriptions", _subscriptions),
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
                raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
            if not isinstance(body, dict):
                raise GraphError(400, "BadRequest", "A JSON object is required.")
        try:
            result = await route(request.app[CONTROL], request, body)
        except KeyError as exc:
            raise GraphError(404, "ResourceNotFound", str(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise GraphError(400, "BadRequest", str(exc)) from exc
        if result is None:
            return web.Response(status=204)
        return web.json_response(result)

    return handler


async def _clients(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    return c.add_client(b["client_id"], b["client_secret"])


async def _users(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    return c.add_user(
        b["upn"],
        b["client_id"],
        refresh_token=b.get("refresh_token"),
        tenant_id=b.get("tenant_id"),
        display_name=b.get("display_name"),
    )


async def _grant(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    return {"refresh_token": c.grant_refresh_token(r.match_info["upn"], b["client_id"])}


async def _calendars(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    return c.add_calendar(r.match_info["upn"], b["name"])


async def _create(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    calendar_id = b.pop("calendar_id", None)
    return c.create_event(r.match_info["upn"], b, calendar_id)


async def _events(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    return {"value": c.events(r.match_info["upn"])}


async def _export(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    window = (parse_timestamp(r.query["startDateTime"]), parse_timestamp(r.query["endDateTime"]))
    return {"value": c.export(r.match_info["upn"], window, r.query.get("calendar_id"))}


async def _update(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    return c.update_event(r.match_info["upn"], r.match_info["event"], b)


async def _delete(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    c.delete_event(r.match_info["upn"], r.match_info["event"])


async def _occurrence_id(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    return {"id": c.occurrence_id(b["master_id"], parse_timestamp(b["original_start"]))}


async def _invalidate(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    count = c.invalidate_delta_tokens(r.match_info["upn"], b.get("code", SYNC_STATE_NOT_FOUND))
    return {"invalidated": count}


async def _block(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    c.set_block(r.match_info["upn"], b.get("block"))


async def _revoke_user(c: Control, r: web.Request, _: dict[str, Any]) -> Any:
    c.revoke_sessions(r.match_info["upn"])


async def _revoke(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.revoke_refresh_token(b["refresh_token"])


async def _expire(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    return {"expired": c.expire_access_tokens(b.get("upn"))}


async def _delta(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.replay_delta_rounds(int(b.get("replay_next", 0)))


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


async def _notifications(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.drop_notifications(int(b.get("drop", 0)))
    c.duplicate_notifications(int(b.get("duplicate", 0)))


async def _lifecycle(c: Control, r: web.Request, b: dict[str, Any]) -> Any:
    c.fire_lifecycle(r.match_info["sub"], b["event"])


async def _subscriptions(c: Control, _: web.Request, __: dict[str, Any]) -> Any:
    return {"value": c.subscriptions()}


async def _deliveries(c: Control, _: web.Request, __: dict[str, Any]) -> Any:
    return {"value": c.deliveries()}


async def _clock(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    if "now" in b:
        c.set_now(None if b["now"] is None else parse_timestamp(b["now"]))
    if b.get("advance_s"):
        c.advance(float(b["advance_s"]))
    return {"now": format_timestamp(c.now())}


async def _sign_ins(c: Control, _: web.Request, b: dict[str, Any]) -> Any:
    c.queue_sign_in(b.get("upn"), deny=bool(b.get("deny", False)))
