"""Microsoft Graph routes (v1.0 and beta): me, calendars, calendarView delta, events and
subscriptions; plus the middlewares for request ids, errors, faults and Bearer authentication.
Event reads return single-value extended properties only when ``$expand``ed (see ``extended``);
create and update answers never include them, as documented.

Invariants: every Graph error leaves as the Graph envelope and every identity error in the
Entra shape; every ``/v1.0/`` and ``/beta/`` request is authenticated before a handler runs;
every response carries ``request-id`` and ``client-request-id``; v1.0 does not offer delta on a
named calendar (400 for the ``delta`` segment, as Graph answers unknown segments).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from sandbox.emulators.shared.faults import Fired, break_first_item
from sandbox.emulators.shared.tokens import TokenError, decode_token, encode_token

from . import extended
from .backend import BACKEND, Backend
from .delta import SYNC_STATE_NOT_FOUND, Chain, Generation, with_zone
from .errors import GraphError, OAuthError, bad_request, invalid_token, sync_state_not_found
from .faults import graph_error, oauth_error
from .identity import AccessToken, User
from .listing import list_page, parse_list_query
from .oauth import oauth_response
from .store import EventRecord, Instance
from .times import ZoneError, format_timestamp, parse_timestamp, zone

VERSIONS = ("v1.0", "beta")
CONTROL_PREFIX = "/_control/"
_GRANT = web.RequestKey("microsoft_emulator_grant", AccessToken)
_FIRED = web.RequestKey("microsoft_emulator_fired", Fired)
_IDS = web.RequestKey("microsoft_emulator_ids", tuple)
_MAXPAGESIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
_TIMEZONE = re.compile(r"outlook\.timezone\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
_NO_DELTA_OPTIONS = ("$select", "$filter", "$orderby", "$expand", "$search")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_graph(path: str) -> bool:
    return path.startswith(("/v1.0/", "/beta/"))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids on every response; GraphError/OAuthError to their documented shapes."""
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id", request_id)
    ids = {"request-id": request_id, "client-request-id": client_request_id}
    try:
        response = await handler(request)
    except GraphError as exc:
        body = exc.body(request_id, client_request_id, request.app[BACKEND].clock.now())
        response = web.json_response(body, status=exc.status, headers=exc.headers)
    except OAuthError as exc:
        response = oauth_response(exc, request)
    if _is_graph(request.path):
        response.headers.update(ids)
    return response


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply injected faults to every route but the control API."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    fired = request.app[BACKEND].faults.fire(request.method, request.path)
    if fired.delay_s:
        await asyncio.sleep(fired.delay_s)
    if fired.error is not None:
        if _is_graph(request.path):
            raise graph_error(fired.error)
        raise oauth_error(fired.error)
    request[_FIRED] = fired
    response = await handler(request)
    if fired.malformed_json and 200 <= response.status < 300:
        # Truncated JSON, as a connection cut mid-body would leave it.
        return web.Response(
            status=response.status, text='{"@odata.context": "', content_type="application/json"
        )
    if fired.malformed_item and response.status == 200 and isinstance(response, web.Response):
        assert response.body is None or isinstance(response.body, bytes)
        response.body = break_first_item(response.body or b"{}", "value")
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_graph(request.path):
        backend = request.app[BACKEND]
        challenge = (
            'Bearer realm="", authorization_uri="'
            f'{backend.origin}/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"'
        )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise invalid_token("Access token is empty.", challenge)
        result = backend.directory.authenticate(token.strip())
        if isinstance(result, str):
            raise invalid_token(result, challenge)
        request[_GRANT] = result
    return await handler(request)


def add_routes(app: web.Application) -> None:
    for version in VERSIONS:
        p = f"/{version}/"
        app.router.add_get(p + "me", me)
        app.router.add_get(p + "me/calendars", calendars)
        app.router.add_get(p + "me/calendarView/delta", delta)
        app.router.add_get(p + "users/{user}/calendarView/delta", delta)
        app.router.add_get(p + "me/calendars/{calendar}/calendarView/delta", delta)
        app.router.add_get(p + "users/{user}/calendars/{calendar}/calendarView/delta", delta)
        app.router.add_post(p + "me/events", create_event)
        app.router.add_post(p + "me/calendars/{calendar}/events", create_event)
        app.router.add_get(p + "me/events", list_events)
        app.router.add_get(p + "me/calendars/{calendar}/events", list_events)
        app.router.add_get(p + "me/events/{event}", get_event)
        app.router.add_patch(p + "me/events/{event}", patch_event)
        app.router.add_delete(p + "me/events/{event}", delete_event)
        app.router.add_post(p + "subscriptions", create_subscription)
        app.router.add_get(p + "subscriptions", list_subscriptions)
        app.router.add_get(p + "subscriptions/{sub}", get_subscription)
        app.router.add_patch(p + "subscriptions/{sub}", renew_subscription)
        app.router.add_delete(p + "subscriptions/{sub}", delete_subscription)
        app.router.add_post(p + "subscriptions/{sub}/reauthorize", reauthorize_subscription)
        app.router.add_route("*", p + "{tail:.*}", unknown_segment)


def _ctx(request: web.Request) -> tuple[Backend, User]:
    backend = request.app[BACKEND]
    user = backend.directory.users[request[_GRANT].user_id]
    path_user = request.match_info.get("user")
    if path_user is not None and path_user.lower() not in (user.id, user.upn.lower()):
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )
    return backend, user


def _base(request: web.Request) -> str:
    version = request.path.split("/")[1]
    return f"{request.app[BACKEND].origin}/{version}/"


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc


def _prefer(request: web.Request) -> tuple[int | None, str]:
    """``odata.maxpagesize`` and ``outlook.timezone`` from the Prefer header(s)."""
    text = ",".join(request.headers.getall("Prefer", []))
    size_match, tz_match = _MAXPAGESIZE.search(text), _TIMEZONE.search(text)
    tz_name = "UTC"
    if tz_match is not None:
        try:
            zone(tz_match.group(1))
            tz_name = tz_match.group(1)
        except ZoneError:
            # An unknown zone in Prefer falls back to UTC rather than failing the request.
            tz_name = "UTC"
    return (int(size_match.group(1)) if size_match else None), tz_name


async def unknown_segment(request: web.Request) -> web.Response:
    segment = request.match_info["tail"].rstrip("/").split("/")[-1] or request.path
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


async def me(request: web.Request) -> web.Response:
    _, user = _ctx(request)
    return web.json_response(
        {
            "@odata.context": f"{_base(request)}$metadata#users/$entity",
            "id": user.id,
            "displayName": user.display_name,
            "userPrincipalName": user.upn,
            "mail": user.upn,
        }
    )


async def calendars(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    try:
        top = int(request.query.get("$top", "10"))
        skip = int(request.query.get("$skip", "0"))
    except ValueError as exc:
        raise bad_request("Invalid $top or $skip value.") from exc
    if top < 1 or skip < 0:
        raise bad_request("Invalid $top or $skip value.")
    cals = backend.store.calendars_of(user.id)
    body: dict[str, Any] = {
        "@odata.context": f"{_base(request)}$metadata#users('{user.id}')/calendars"
    }
    if skip + top < len(cals):
        body["@odata.nextLink"] = f"{_base(request)}me/calendars?$top={top}&$skip={skip + top}"
    body["value"] = [backend.store.calendar_resource(c) for c in cals[skip : skip + top]]
    return web.json_response(body)


async def delta(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    version = request.path.split("/")[1]
    calendar_id = request.match_info.get("calendar")
    if calendar_id is not None and version == "v1.0":
        # v1.0 documents only /me/calendarView/delta and /users/{id}/calendarView/delta.
        raise GraphError(400, "BadRequest", "Resource not found for the segment 'delta'.")
    for option in _NO_DELTA_OPTIONS:
        if option in request.query:
            raise bad_request(
                f"The query parameter '{option}' is not supported with change tracking over "
                "the 'calendarView' resource.",
                "ErrorInvalidUrlQuery",
            )
    size, tz_name = _prefer(request)
    fired = request.get(_FIRED) or Fired()
    page_size = min(size or backend.default_page_size, backend.max_page_size)
    if fired.page_size is not None:
        page_size = min(page_size, fired.page_size)
    link_base = f"{backend.origin}{request.path}"
    chain, generation = _chain(request, backend, user, calendar_id, link_base)
    page = backend.delta.page(
        chain, generation, max(page_size, 1), tz_name, force_empty=fired.empty_page
    )
    payload = {
        "c": chain.id,
        "g": page.generation,
        "k": "d" if page.complete else "s",
        "s": format_timestamp(chain.window[0]),
        "e": format_timestamp(chain.window[1]),
    }
    token = encode_token(payload, backend.state_key)
    body: dict[str, Any] = {"@odata.context": f"{_base(request)}$metadata#Collection(event)"}
    if page.complete:
        body["@odata.deltaLink"] = f"{link_base}?$deltatoken={token}"
    else:
        body["@odata.nextLink"] = f"{link_base}?$skiptoken={token}"
    body["value"] = page.items
    applied = ["odata.track-changes"]
    if size is not None:
        applied.append(f"odata.maxpagesize={size}")
    return web.json_response(body, headers={"Preference-Applied": ", ".join(applied)})


def _chain(
    request: web.Request, backend: Backend, user: User, calendar_id: str | None, link_base: str
) -> tuple[Chain, Generation | None]:
    skip = request.query.get("$skiptoken") or request.query.get("$skipToken")
    dtoken = request.query.get("$deltatoken") or request.query.get("$deltaToken")
    token = skip or dtoken
    if token:
        try:
            payload = decode_token(token, backend.state_key)
            chain_id, gen = str(payload["c"]), int(payload["g"])
        except (TokenError, KeyError, ValueError, TypeError) as exc:
            # A token this server never minted names no sync state it has.
            raise sync_state_not_found(
                SYNC_STATE_NOT_FOUND,
                "The sync state generation is not found; generation=0;[highest=0].",
                None,
            ) from exc
        if (payload.get("k") == "d") != (dtoken is not None and skip is None):
            raise bad_request("The token does not match the $skiptoken/$deltatoken parameter.")
        try:
            return backend.delta.resolve(user.id, chain_id, gen)
        except GraphError as exc:
            if backend.location_on_410 and exc.status == 410:
                query = f"startDateTime={quote(payload['s'])}&endDateTime={quote(payload['e'])}"
                exc.headers["Location"] = f"{link_base}?{query}&$deltatoken="
            raise
    start_text = request.query.get("startDateTime") or request.query.get("StartDateTime")
    end_text = request.query.get("endDateTime") or request.query.get("EndDateTime")
    if not start_text or not end_text:
        raise bad_request(
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
            "ErrorInvalidParameter",
        )
    try:
        window = (parse_timestamp(start_text), parse_timestamp(end_text))
    except ValueError as exc:
        raise bad_request(
            "The parameter 'startDateTime' or 'endDateTime' is not a valid date-time.",
            "ErrorInvalidParameter",
        ) from exc
    if window[1] <= window[0]:
        raise bad_request("The end date must be after the start date.", "ErrorInvalidParameter")
    store = backend.store
    cal = (
        store.default_calendar(user.id)
        if calendar_id is None
        else store.calendar(user.id, calendar_id)
    )
    return backend.delta.start(user.id, cal.id, window), None


def _event_json(
    request: web.Request, backend: Backend, user: User, item: EventRecord | Instance
) -> dict[str, Any]:
    resource = backend.store.render(item) if isinstance(item, EventRecord) else item.resource
    _, tz_name = _prefer(request)
    ctx = f"{_base(request)}$metadata#users('{user.id}')/events/$entity"
    return {"@odata.context": ctx, **with_zone(resource, tz_name)}


async def create_event(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    store = backend.store
    calendar_id = request.match_info.get("calendar")
    cal = (
        store.default_calendar(user.id)
        if calendar_id is None
        else store.calendar(user.id, calendar_id)
    )
    record, _ = store.create_event(cal, await _json(request))
    return web.json_response(_event_json(request, backend, user, record), status=201)


async def list_events(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    store = backend.store
    calendar_id = request.match_info.get("calendar")
    cal = (
        store.default_calendar(user.id)
        if calendar_id is None
        else store.calendar(user.id, calendar_id)
    )
    query = parse_list_query(request.query)
    _, tz_name = _prefer(request)
    body = list_page(
        store,
        store.events_of(user.id, cal.id),
        query,
        lambda record: with_zone(store.render(record), tz_name),
        f"{backend.origin}{request.path}",
    )
    context = f"{_base(request)}$metadata#users('{user.id}')/events"
    return web.json_response({"@odata.context": context, **body})


async def get_event(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    item = backend.store.get(user.id, request.match_info["event"])
    expand = request.query.get("$expand")
    wanted = None if expand is None else extended.parse_expand(expand)
    resource = _event_json(request, backend, user, item)
    stored = backend.store.extended_properties(item)
    return web.json_response(extended.with_expansion(resource, stored, wanted))


async def patch_event(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    record = backend.store.update_event(
        user.id, request.match_info["event"], await _json(request), request.headers.get("If-Match")
    )
    return web.json_response(_event_json(request, backend, user, record))


async def delete_event(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    backend.store.delete_event(
        user.id, request.match_info["event"], request.headers.get("If-Match")
    )
    return web.Response(status=204)


async def create_subscription(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    grant = request[_GRANT]
    cals = {c.id for c in backend.store.calendars_of(user.id)}
    sub = await backend.hub.create(
        user_id=user.id,
        upn=user.upn,
        tenant_id=user.tenant_id,
        client_id=grant.client_id,
        body=await _json(request),
        calendars=cals,
    )
    return web.json_response(sub.to_json(_base(request)), status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    now: datetime = backend.clock.now()
    subs = [
        s.to_json(_base(request))
        for s in backend.hub.subscriptions.values()
        if s.user_id == user.id and s.expires > now
    ]
    for sub in subs:
        sub.pop("@odata.context")
    return web.json_response(
        {"@odata.context": f"{_base(request)}$metadata#subscriptions", "value": subs}
    )


async def get_subscription(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    sub = backend.hub.get(user.id, request.match_info["sub"])
    return web.json_response(sub.to_json(_base(request)))


async def renew_subscription(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    sub = backend.hub.renew(user.id, request.match_info["sub"], await _json(request))
    return web.json_response(sub.to_json(_base(request)))


async def delete_subscription(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    backend.hub.delete(user.id, request.match_info["sub"])
    return web.Response(status=204)


async def reauthorize_subscription(request: web.Request) -> web.Response:
    backend, user = _ctx(request)
    backend.hub.reauthorize(user.id, request.match_info["sub"])
    return web.Response(status=204)
