"""Calendar API v3 routes: calendarList.list, events list/get/insert/patch/update/delete/watch
and channels.stop, plus the middlewares for errors, faults and Bearer authentication.

Invariants: every error leaves as the Google envelope; every ``/calendar/v3/`` request is
authenticated before a handler runs; handlers keep no state outside the Backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.emulators.shared.faults import break_first_item
from sandbox.emulators.shared.tokens import TokenError, decode_token, encode_token

from .backend import BACKEND, ApiCall, Backend
from .errors import ApiError, auth_error, bad_param
from .faults import api_error
from .listing import PageOptions, events_envelope, list_events, parse_list_query
from .store import AccessGrant, CalendarRecord

PREFIX = "/calendar/v3/"
CONTROL_PREFIX = "/_control/"
_GRANT = web.RequestKey("google_emulator_grant", AccessGrant)
_FIRED = web.RequestKey("google_emulator_fired", PageOptions)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply injected faults to every route but the control API."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    fired = request.app[BACKEND].faults.fire(request.method, request.path)
    if fired.delay_s:
        await asyncio.sleep(fired.delay_s)
    if fired.error is not None:
        raise api_error(fired.error)
    request[_FIRED] = PageOptions(force_empty=fired.empty_page, page_cap=fired.page_size)
    response = await handler(request)
    if fired.malformed_json and response.status == 200:
        # Truncated JSON, as a connection cut mid-body would leave it.
        return web.Response(
            status=200,
            text='{"kind": "calendar#events", "items": [{"id": ',
            content_type="application/json",
        )
    if fired.malformed_item and response.status == 200 and isinstance(response, web.Response):
        assert response.body is None or isinstance(response.body, bytes)
        response.body = break_first_item(response.body or b"{}", "items")
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PREFIX):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise auth_error()
        grant = request[_GRANT] = request.app[BACKEND].store.authenticate(token.strip())
        backend = request.app[BACKEND]
        quota = backend.quotas.get(grant.email)
        now = time.monotonic()
        admitted = quota is None or quota.admit(now)
        backend.calls.append(ApiCall(now, grant.email, request.method, request.path, not admitted))
        if not admitted:
            raise ApiError(
                403, "userRateLimitExceeded", "User Rate Limit Exceeded", domain="usageLimits"
            )
    return await handler(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX + "users/me/calendarList", calendar_list)
    app.router.add_get(PREFIX + "calendars/{calendarId}/events", events_list)
    app.router.add_post(PREFIX + "calendars/{calendarId}/events", events_insert)
    app.router.add_post(PREFIX + "calendars/{calendarId}/events/watch", events_watch)
    app.router.add_get(PREFIX + "calendars/{calendarId}/events/{eventId}", events_get)
    app.router.add_patch(PREFIX + "calendars/{calendarId}/events/{eventId}", events_patch)
    app.router.add_put(PREFIX + "calendars/{calendarId}/events/{eventId}", events_update)
    app.router.add_delete(PREFIX + "calendars/{calendarId}/events/{eventId}", events_delete)
    app.router.add_post(PREFIX + "channels/stop", channels_stop)


def _calendar(request: web.Request) -> tuple[Backend, AccessGrant, CalendarRecord]:
    backend = request.app[BACKEND]
    grant = request[_GRANT]
    return backend, grant, backend.store.calendar(grant.email, request.match_info["calendarId"])


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise ApiError(400, "parseError", "Parse Error") from exc


async def calendar_list(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    grant = request[_GRANT]
    store = backend.store
    try:
        size = min(int(request.query.get("maxResults", "100")), 250)
    except ValueError as exc:
        raise bad_param("maxResults", "Invalid value for maxResults") from exc
    if size < 1:
        raise bad_param("maxResults", "Invalid value for maxResults")
    offset = 0
    if "pageToken" in request.query:
        try:
            offset = int(decode_token(request.query["pageToken"], backend.token_key)["o"])
        except (TokenError, KeyError, ValueError) as exc:
            raise bad_param("pageToken", "Invalid page token") from exc
    ids = store.user_calendars.get(grant.email, [])
    entries = [_list_entry(store.calendars[i]) for i in ids[offset : offset + size]]
    body: dict[str, Any] = {"kind": "calendar#calendarList", "etag": f'"{len(ids)}"'}
    if offset + size < len(ids):
        body["nextPageToken"] = encode_token({"o": offset + size}, backend.token_key)
    else:
        body["nextSyncToken"] = encode_token({"u": grant.email, "n": len(ids)}, backend.token_key)
    body["items"] = entries
    return web.json_response(body)


def _list_entry(cal: CalendarRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "calendar#calendarListEntry",
        "etag": cal.etag,
        "id": cal.id,
        "summary": cal.summary,
        "timeZone": cal.time_zone,
        "colorId": "14",
        "backgroundColor": "#9fe1e7",
        "foregroundColor": "#000000",
        "selected": True,
        "accessRole": cal.access_role,
        "defaultReminders": [{"method": "popup", "minutes": 10}],
    }
    if cal.primary:
        entry["primary"] = True
    return entry


async def events_list(request: web.Request) -> web.Response:
    backend, _, cal = _calendar(request)
    query = parse_list_query(list(request.query.items()))
    page = list_events(
        backend.store,
        cal,
        query,
        backend.token_key,
        options=request.get(_FIRED, PageOptions()),
        sync_token_max_age=backend.sync_token_max_age,
    )
    return web.json_response(events_envelope(cal, page))


async def events_insert(request: web.Request) -> web.Response:
    backend, _, cal = _calendar(request)
    return web.json_response(backend.store.insert_event(cal, await _json(request)))


async def events_get(request: web.Request) -> web.Response:
    backend, _, cal = _calendar(request)
    event = backend.store.get_event(
        cal, request.match_info["eventId"], request.headers.get("If-Match")
    )
    return web.json_response(event)


async def events_patch(request: web.Request) -> web.Response:
    return await _write(request, replace=False)


async def events_update(request: web.Request) -> web.Response:
    return await _write(request, replace=True)


async def _write(request: web.Request, *, replace: bool) -> web.Response:
    backend, _, cal = _calendar(request)
    event = backend.store.write_event(
        cal,
        request.match_info["eventId"],
        await _json(request),
        replace=replace,
        if_match=request.headers.get("If-Match"),
    )
    return web.json_response(event)


async def events_delete(request: web.Request) -> web.Response:
    backend, _, cal = _calendar(request)
    backend.store.delete_event(cal, request.match_info["eventId"], request.headers.get("If-Match"))
    return web.Response(status=204)


async def events_watch(request: web.Request) -> web.Response:
    backend, grant, cal = _calendar(request)
    channel = await backend.hub.watch(
        cal.id, grant.email, grant.client_id, await _json(request), backend.api_base_url
    )
    return web.json_response(channel.resource())


async def channels_stop(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    grant = request[_GRANT]
    project = backend.store.clients[grant.client_id].project_number
    backend.hub.stop(grant.email, grant.client_id, await _json(request), project)
    return web.Response(status=204)
