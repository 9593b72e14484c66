"""``GoogleCalendarProvider``: the ``CalendarProvider`` for Google Calendar API v3.

Invariants:
- every call goes through the replica's shared aiohttp session (its timeout bounds every
  call) and raises only ``ProviderError``s; nothing here retries (the actor does);
- sync follows providers.md A.2: full sync = ``timeMin``/``timeMax`` + ``singleEvents`` +
  ``showDeleted``; incremental = the same fixed parameters + ``syncToken`` and never a window;
  each page's cursor pins the round's query so a resumed round repeats it exactly;
- 410 on events.list is ``SyncStateExpired`` whatever its reason; a malformed 2xx answer is
  ``Transient`` (the round fails and is retried; the replica never crashes on bad data);
- calendar and event ids are percent-encoded as whole path segments (ids hold ``@``, ``#``);
- a draft's binding id goes into ``extendedProperties.private``; ``find_bound_event`` lists by
  ``privateExtendedProperty`` (never with a syncToken: Google forbids the pair) and still checks
  each item's binding itself, so a server that ignored the filter cannot hand back a stranger;
- ``get_event`` treats 404, 410 and a cancelled event alike: gone (None);
- messages hold operation names, statuses and Google reasons, never tokens, bodies or URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp

from config.settings import Settings
from metrics import events as metrics
from providers import payload
from providers.errors import (
    Conflict,
    ErrorKind,
    Permanent,
    ProviderError,
    SyncStateExpired,
    Transient,
)
from providers.google import CAPABILITIES, mapping
from providers.google import cursor as cursors
from providers.google.auth import GoogleTokenRefresher
from providers.google.notifications import parse_notifications
from providers.http import HttpResponse, parse_retry_after, send
from providers.models import (
    CalendarInfo,
    Event,
    EventDraft,
    EventRemoval,
    Notification,
    PushChannel,
    SetAside,
    SyncPage,
    SyncWindow,
    TokenGrant,
)
from providers.payload import MalformedPayload

PROVIDER = "google"
# Google's own default is 250; an initial sync of a large calendar then needs 4x the requests
# and commits (each page commits with its continuation). Incremental pages are small anyway.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 2500  # "The page size can never be larger than 2500 events."
CALENDAR_LIST_PAGE_SIZE = 250
MAX_CHANNEL_ID_LENGTH = 64  # events.watch limits (providers.md A.4)
MAX_CHANNEL_TOKEN_LENGTH = 256
# A filtered listing matches one event; this many pages without an end means a looping server.
MAX_FIND_PAGES = 50

# Fixed on every page of every round (incremental rounds must repeat them, A.2).
_SYNC_PARAMS = {"singleEvents": "true", "showDeleted": "true"}


def _segment(identifier: str) -> str:
    """An id as one percent-encoded path segment (``/``, ``@``, ``#`` included)."""
    return quote(identifier, safe="")


def _events_path(calendar_id: str) -> str:
    return f"calendars/{_segment(calendar_id)}/events"


def _event_path(calendar_id: str, event_id: str) -> str:
    return f"{_events_path(calendar_id)}/{_segment(event_id)}"


def _expiration(value: object) -> datetime | None:
    """A channel ``expiration`` (epoch ms, sent as a string or a number) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedPayload("channel.expiration is not epoch milliseconds")
    return datetime.fromtimestamp(value / 1000, UTC)


class GoogleCalendarProvider:
    """Google Calendar v3 over the shared aiohttp session; one instance serves a replica."""

    name = PROVIDER
    capabilities = CAPABILITIES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_base_url: str,
        token_uri: str,
        client_id: str,
        client_secret: str,
        executor: ThreadPoolExecutor | None = None,
        max_refresh_threads: int = 4,
        refresh_timeout_s: float = 10.0,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self._session = session
        self._base_url = api_base_url if api_base_url.endswith("/") else api_base_url + "/"
        self._page_size = page_size
        # Google's tokeninfo endpoint sits beside its token endpoint (oauth2.googleapis.com).
        self._tokeninfo_url = urljoin(token_uri, "tokeninfo")
        self._client_id = client_id
        self._refresher = GoogleTokenRefresher(
            token_uri=token_uri,
            client_id=client_id,
            client_secret=client_secret,
            executor=executor,
            max_threads=max_refresh_threads,
            timeout_s=refresh_timeout_s,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        executor: ThreadPoolExecutor | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> GoogleCalendarProvider:
        """A provider configured from ``IW_GOOGLE_*`` settings (client id and secret required)."""
        if settings.google_client_id is None or settings.google_client_secret is None:
            raise ValueError("IW_GOOGLE_CLIENT_ID and IW_GOOGLE_CLIENT_SECRET must be set")
        return cls(
            session,
            api_base_url=settings.google_api_base_url,
            token_uri=settings.google_token_uri,
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret.get_secret_value(),
            executor=executor,
            page_size=page_size,
        )

    def __repr__(self) -> str:
        return f"GoogleCalendarProvider(api_base_url={self._base_url!r})"

    async def aclose(self) -> None:
        """Release the refresh threads and their sessions (the aiohttp session is the caller's)."""
        await self._refresher.aclose()

    # --- auth ------------------------------------------------------------------------------

    async def refresh_access_token(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token through google-auth (off the loop); see ``auth``."""
        return await self._refresher.refresh(refresh_token)

    async def identify(self, access_token: str) -> str | None:
        """The account's ``sub`` from the tokeninfo endpoint, when the token was issued to our
        client and its scopes let Google name the user; else None."""
        response = await send(
            self._session,
            "GET",
            self._tokeninfo_url,
            provider=PROVIDER,
            headers={"Accept": "application/json"},
            params={"access_token": access_token},
        )
        if response.status == 400:  # Google's answer for a token it does not know
            return None
        if not 200 <= response.status < 300:
            raise self._error(response, "tokeninfo")
        try:
            info = _json_object(response)
        except MalformedPayload as exc:
            raise _malformed("tokeninfo", exc) from None
        subject = info.get("sub")
        if info.get("aud") != self._client_id or not isinstance(subject, str):
            return None
        return subject.strip() or None

    # --- reads -----------------------------------------------------------------------------

    async def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        """Every calendarList entry, following ``nextPageToken``."""
        calendars: list[CalendarInfo] = []
        page_token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params = {"maxResults": str(CALENDAR_LIST_PAGE_SIZE)}
            if page_token is not None:
                params["pageToken"] = page_token
            body = await self._get_json(
                access_token, "users/me/calendarList", "calendarList.list", params=params
            )
            try:
                calendars.extend(mapping.parse_calendar_entry(e) for e in _items(body))
                page_token = _token(body, "nextPageToken")
            except MalformedPayload as exc:
                raise _malformed("calendarList.list", exc) from None
            if page_token is None:
                return calendars
            if page_token in seen_tokens:  # a looping server would otherwise spin forever
                raise Transient("Google calendarList.list repeated a page", provider=PROVIDER)
            seen_tokens.add(page_token)

    async def fetch_sync_page(
        self,
        access_token: str,
        calendar_id: str,
        *,
        window: SyncWindow,
        delta_token: str | None = None,
        cursor: str | None = None,
    ) -> SyncPage:
        """One events.list page: continue ``cursor``, else increment from ``delta_token``,
        else start a full sync over ``window`` (a cursor's own window wins over ``window``)."""
        query, page_token = self._round(calendar_id, window, delta_token, cursor)
        params = dict(_SYNC_PARAMS, maxResults=str(query.page_size))
        if query.sync_token is not None:
            params["syncToken"] = query.sync_token
        else:
            assert query.time_min is not None and query.time_max is not None
            params["timeMin"], params["timeMax"] = query.time_min, query.time_max
        if page_token is not None:
            params["pageToken"] = page_token
        body = await self._get_json(
            access_token, _events_path(calendar_id), "events.list", params=params, sync=True
        )
        try:
            return _sync_page(body, query)
        except MalformedPayload as exc:
            raise _malformed("events.list", exc) from None

    def _round(
        self,
        calendar_id: str,
        window: SyncWindow,
        delta_token: str | None,
        cursor: str | None,
    ) -> tuple[cursors.RoundQuery, str | None]:
        """The round's fixed query and the page token to ask for."""
        if cursor is not None:
            try:
                decoded = cursors.decode(cursor)
            except ValueError:
                # Only a full resync recovers from a cursor we cannot read.
                raise SyncStateExpired(
                    "unreadable Google sync cursor", provider=PROVIDER, reason="badCursor"
                ) from None
            if decoded.query.calendar_id != calendar_id:
                raise SyncStateExpired(
                    "Google sync cursor of another calendar", provider=PROVIDER, reason="badCursor"
                )
            return decoded.query, decoded.page_token
        if delta_token is not None:
            return cursors.RoundQuery(calendar_id, self._page_size, sync_token=delta_token), None
        try:
            time_min = mapping.format_rfc3339(window.start)
            time_max = mapping.format_rfc3339(window.end)
        except ValueError:
            raise Permanent("sync window must be timezone-aware", provider=PROVIDER) from None
        query = cursors.RoundQuery(
            calendar_id, self._page_size, time_min=time_min, time_max=time_max
        )
        return query, None

    # --- push ------------------------------------------------------------------------------

    async def start_push(
        self,
        access_token: str,
        calendar_id: str,
        *,
        address: str,
        channel_id: str,
        token: str,
        ttl_s: int,
    ) -> PushChannel:
        """events.watch. Google has no renewal: the caller starts a new channel (new id), then
        stops the old one, and accepts notifications from both meanwhile."""
        if not 0 < len(channel_id) <= MAX_CHANNEL_ID_LENGTH:
            raise Permanent("channel id must be 1..64 characters", provider=PROVIDER)
        if len(token) > MAX_CHANNEL_TOKEN_LENGTH:
            raise Permanent("channel token must be at most 256 characters", provider=PROVIDER)
        if ttl_s <= 0:
            raise Permanent("channel ttl must be positive", provider=PROVIDER)
        request = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token,
            "params": {"ttl": str(ttl_s)},
        }
        path = f"{_events_path(calendar_id)}/watch"
        body = await self._json_call(access_token, "POST", path, "events.watch", json_body=request)
        try:
            if payload.read_str(body, "id", "channel") != channel_id:
                raise MalformedPayload("channel.id differs from the requested id")
            resource_id = payload.read_str(body, "resourceId", "channel")
            expires_at = _expiration(body.get("expiration"))
        except MalformedPayload as exc:
            raise _malformed("events.watch", exc) from None
        return PushChannel(
            id=channel_id,
            calendar_id=calendar_id,
            resource_id=resource_id,
            expires_at=expires_at,
            token=token,
            # The echoed channel token is a secret: keep it out of what may be stored as raw.
            raw={key: value for key, value in body.items() if key != "token"},
        )

    async def stop_push(self, access_token: str, channel: PushChannel) -> None:
        """channels.stop; a channel Google no longer knows (404) counts as stopped."""
        if channel.resource_id is None:
            raise Permanent(
                "a Google channel cannot be stopped without resourceId", provider=PROVIDER
            )
        request = {"id": channel.id, "resourceId": channel.resource_id}
        response = await self._request(access_token, "POST", "channels/stop", json_body=request)
        if response.status == 404 or 200 <= response.status < 300:
            return
        raise self._error(response, "channels.stop")

    def parse_notifications(self, headers: Mapping[str, str], body: bytes) -> list[Notification]:
        """The push request's ``X-Goog-*`` headers as one notification (not yet verified)."""
        return parse_notifications(headers, body)

    # --- writes ----------------------------------------------------------------------------

    async def create_event(
        self, access_token: str, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """events.insert with an id derived from the key, so a replay hits 409 on the same id:
        a live event with that id is returned; one deleted since raises Conflict."""
        event_id = mapping.event_id_for_key(idempotency_key)
        response = await self._request(
            access_token,
            "POST",
            _events_path(calendar_id),
            json_body=_draft_body(draft, event_id=event_id),
        )
        if response.status == 409:
            existing = await self.get_event(access_token, calendar_id, event_id)
            if existing is None:
                # Google keeps ids of deleted events: the caller decides whether to recreate.
                raise Conflict(
                    "Google event id is taken by a deleted event",
                    provider=PROVIDER,
                    reason="deleted",
                )
            return existing
        return self._live_event(response, calendar_id, "events.insert")

    async def update_event(
        self,
        access_token: str,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """events.patch of the draft's fields (attendees, reminders and the rest stay as the
        user set them); with ``etag``, ``If-Match`` makes a changed event a Conflict (412)."""
        response = await self._request(
            access_token,
            "PATCH",
            _event_path(calendar_id, event_id),
            json_body=_draft_body(draft, clear_absent=True),
            etag=etag,
        )
        return self._live_event(response, calendar_id, "events.patch")

    async def delete_event(
        self, access_token: str, calendar_id: str, event_id: str, *, etag: str | None = None
    ) -> None:
        """events.delete; 404 and 410 (``deleted``) mean already gone; 412 is Conflict."""
        response = await self._request(
            access_token, "DELETE", _event_path(calendar_id, event_id), etag=etag
        )
        if response.status in (404, 410) or 200 <= response.status < 300:
            return
        raise self._error(response, "events.delete")

    # --- reads of our own events -----------------------------------------------------------

    async def get_event(self, access_token: str, calendar_id: str, event_id: str) -> Event | None:
        """events.get: the live event, or None when it is gone (404, 410 or cancelled: the get
        method returns cancelled events, which are deletions or hidden instances)."""
        response = await self._request(access_token, "GET", _event_path(calendar_id, event_id))
        if response.status in (404, 410):
            return None
        if not 200 <= response.status < 300:
            raise self._error(response, "events.get")
        try:
            parsed = mapping.parse_event_item(_json_object(response), calendar_id)
        except MalformedPayload as exc:
            raise _malformed("events.get", exc) from None
        return None if isinstance(parsed, EventRemoval) else parsed

    async def find_bound_event(
        self, access_token: str, calendar_id: str, binding_id: str
    ) -> Event | None:
        """events.list filtered by our private property (masters, not instances; no deleted
        events), following pages: Google may answer empty pages that still continue."""
        try:
            constraint = mapping.binding_constraint(binding_id)
        except ValueError:
            raise Permanent("binding id must be 1..1024 characters", provider=PROVIDER) from None
        page_token: str | None = None
        for _ in range(MAX_FIND_PAGES):
            params = {
                "privateExtendedProperty": constraint,
                "showDeleted": "false",
                "maxResults": str(self._page_size),
            }
            if page_token is not None:
                params["pageToken"] = page_token
            body = await self._get_json(
                access_token, _events_path(calendar_id), "events.list", params=params
            )
            try:
                found = _bound_item(body, calendar_id, binding_id)
                page_token = _token(body, "nextPageToken")
            except MalformedPayload as exc:
                raise _malformed("events.list", exc) from None
            if found is not None or page_token is None:
                return found
        # Empty pages that continue are legal, even with the same token: bound them instead.
        raise Transient("Google events.list paged without end", provider=PROVIDER)

    # --- HTTP plumbing ---------------------------------------------------------------------

    async def _request(
        self,
        access_token: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        etag: str | None = None,
    ) -> HttpResponse:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if etag is not None:
            headers["If-Match"] = etag
        return await send(
            self._session,
            method,
            self._base_url + path,
            provider=PROVIDER,
            headers=headers,
            params=params,
            json_body=json_body,
        )

    def _error(
        self, response: HttpResponse, operation: str, *, sync: bool = False
    ) -> ProviderError:
        error = mapping.error_for_response(
            response.status,
            response.body,
            operation=operation,
            retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
            sync=sync,
        )
        if error.kind is ErrorKind.THROTTLED:
            metrics.record_provider_throttled(error.provider)
        return error

    async def _json_call(
        self,
        access_token: str,
        method: str,
        path: str,
        operation: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        sync: bool = False,
    ) -> Mapping[str, Any]:
        response = await self._request(
            access_token, method, path, params=params, json_body=json_body
        )
        if not 200 <= response.status < 300:
            raise self._error(response, operation, sync=sync)
        try:
            return _json_object(response)
        except MalformedPayload as exc:
            raise _malformed(operation, exc) from None

    async def _get_json(
        self,
        access_token: str,
        path: str,
        operation: str,
        *,
        params: Mapping[str, str],
        sync: bool = False,
    ) -> Mapping[str, Any]:
        return await self._json_call(access_token, "GET", path, operation, params=params, sync=sync)

    def _live_event(self, response: HttpResponse, calendar_id: str, operation: str) -> Event:
        if not 200 <= response.status < 300:
            raise self._error(response, operation)
        try:
            return mapping.parse_live_event(_json_object(response), calendar_id)
        except MalformedPayload as exc:
            raise _malformed(operation, exc) from None


def _draft_body(
    draft: EventDraft, *, event_id: str | None = None, clear_absent: bool = False
) -> dict[str, Any]:
    try:
        return mapping.draft_body(draft, event_id=event_id, clear_absent=clear_absent)
    except ValueError:
        # Only the binding id can be refused here; Google would cut it and never find it again.
        raise Permanent("binding id must be 1..1024 characters", provider=PROVIDER) from None


def _bound_item(body: Mapping[str, Any], calendar_id: str, binding_id: str) -> Event | None:
    """The first live item of a filtered events.list page that carries ``binding_id``."""
    zone = body.get("timeZone")
    calendar_zone = zone if isinstance(zone, str) else None
    for item in _items(body):
        parsed = mapping.parse_event_item(item, calendar_id, calendar_zone=calendar_zone)
        if isinstance(parsed, Event) and parsed.binding_id == binding_id:
            return parsed
    return None


def _json_object(response: HttpResponse) -> Mapping[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        raise MalformedPayload("body is not JSON") from None
    if not isinstance(parsed, Mapping):
        raise MalformedPayload("body is not a JSON object")
    return parsed


def _items(body: Mapping[str, Any]) -> list[Any]:
    items = body.get("items", [])
    if not isinstance(items, list):
        raise MalformedPayload("items is not a list")
    return items


def _token(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{key} is not a non-empty string")
    return value


def _sync_page(body: Mapping[str, Any], query: cursors.RoundQuery) -> SyncPage:
    """An events.list answer as a ``SyncPage`` of the round ``query``."""
    zone = body.get("timeZone")
    calendar_zone = zone if isinstance(zone, str) else None
    upserts: list[Event] = []
    removals: list[EventRemoval] = []
    aside: list[SetAside] = []
    for item in _items(body):
        try:
            parsed = mapping.parse_event_item(item, query.calendar_id, calendar_zone=calendar_zone)
        except MalformedPayload as exc:  # this item alone; the page goes on
            aside.append(payload.set_aside(item, exc))
            continue
        if isinstance(parsed, EventRemoval):
            removals.append(parsed)
        else:
            upserts.append(parsed)
    page_token = _token(body, "nextPageToken")
    sync_token = _token(body, "nextSyncToken")
    if page_token is not None and sync_token is not None:
        raise MalformedPayload("both nextPageToken and nextSyncToken are present")
    if page_token is not None:
        next_cursor = cursors.encode(cursors.SyncCursor(query, page_token))
        return SyncPage(
            tuple(upserts),
            tuple(removals),
            next_cursor=next_cursor,
            full_sync=query.full_sync,
            set_aside=tuple(aside),
        )
    if sync_token is None:
        raise MalformedPayload("the last page has no nextSyncToken")
    return SyncPage(
        tuple(upserts),
        tuple(removals),
        delta_token=sync_token,
        full_sync=query.full_sync,
        set_aside=tuple(aside),
    )


def _malformed(operation: str, exc: MalformedPayload) -> Transient:
    # The field name is safe to show; the payload's values are not repeated.
    return Transient(f"Google {operation} answered malformed: {exc}", provider=PROVIDER)
