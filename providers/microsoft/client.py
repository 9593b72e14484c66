"""``MicrosoftCalendarProvider``: the ``CalendarProvider`` for Outlook calendars via Graph.

Invariants:
- every call goes through the replica's shared aiohttp session (its timeout bounds every
  call) and raises only ``ProviderError``s; nothing here retries (the actor does);
- the default calendar is addressed as ``primary`` and syncs through v1.0 calendarView delta;
  other calendars sync through beta calendarView delta, only when enabled (else Permanent);
- the window goes on a round's first request only; after that Graph's nextLink/deltaLink are
  followed verbatim (never rebuilt or re-quoted), and only when they point at the configured
  Graph base URL, so the bearer token never goes to a host a response or a stored value names;
- every Graph call asks for UTC (``Prefer: outlook.timezone="UTC"``);
- a malformed 2xx answer is ``Transient`` (the round fails and is retried); errors are mapped
  by status and Graph error code (``mapping.error_for_response``);
- a draft's binding id goes into ``singleValueExtendedProperties``; reads of one event
  (``get_event``, ``find_bound_event``) ``$expand`` that property, delta cannot (so synced
  events carry no binding id); ``find_bound_event`` also checks each item's expanded binding,
  so a server that ignored the filter cannot hand back a stranger;
- query strings we build percent-encode spaces, ``:`` and ``/`` (as the Graph docs ask), and
  go out verbatim;
- messages hold operation names, statuses and Graph codes, never tokens, bodies or URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from config.settings import Settings
from metrics import events as metrics
from providers import payload
from providers.errors import ErrorKind, Permanent, ProviderError, SyncStateExpired, Transient
from providers.http import HttpResponse, parse_retry_after, send
from providers.microsoft import CAPABILITIES, mapping
from providers.microsoft import cursor as cursors
from providers.microsoft.auth import MicrosoftTokenRefresher
from providers.microsoft.mapping import PRIMARY
from providers.microsoft.notifications import parse_notifications
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

PROVIDER = "microsoft"
DEFAULT_PAGE_SIZE = 100  # Prefer: odata.maxpagesize; Graph may send fewer (or none) per page
MAX_CLIENT_STATE_LENGTH = 128  # subscription.md's limit (changeNotification.md says 255)
# Outlook event subscriptions live at most 10,080 minutes (providers.md B.2); ask a little
# less so clock skew between us and Graph never makes a create or renewal exceed it.
MAX_SUBSCRIPTION_LIFETIME = timedelta(minutes=10080)
SUBSCRIPTION_MARGIN = timedelta(minutes=5)
CHANGE_TYPES = "created,updated,deleted"
# A filtered listing matches one event; this many pages without an end means a looping server.
MAX_FIND_PAGES = 50


def _segment(identifier: str) -> str:
    """An id as one percent-encoded path segment."""
    return quote(identifier, safe="")


def _verbatim(link: str) -> URL:
    # aiohttp re-quotes a str URL (%2f becomes /, %41 becomes A); a yarl URL marked encoded
    # goes out byte for byte, as Graph's opaque links require.
    return URL(link, encoded=True)


class MicrosoftCalendarProvider:
    """Microsoft Graph over the shared aiohttp session; one instance serves a replica."""

    name = PROVIDER
    capabilities = CAPABILITIES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        authority: str,
        graph_base_url: str,
        graph_beta_base_url: str,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str],
        sync_other_calendars: bool = False,
        ca_bundle: Path | None = None,
        lifecycle_notification_url: str | None = None,
        executor: ThreadPoolExecutor | None = None,
        max_refresh_threads: int = 4,
        refresh_timeout_s: float = 10.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self._session = session
        self._base_url = graph_base_url if graph_base_url.endswith("/") else graph_base_url + "/"
        self._beta_url = (
            graph_beta_base_url if graph_beta_base_url.endswith("/") else graph_beta_base_url + "/"
        )
        self._sync_others = sync_other_calendars
        self._lifecycle_url = lifecycle_notification_url
        self._page_size = page_size
        self._clock = clock or (lambda: datetime.now(UTC))
        self._refresher = MicrosoftTokenRefresher(
            authority=authority,
            client_id=client_id,
            client_secret=client_secret,
            scopes=scopes,
            ca_bundle=ca_bundle,
            executor=executor,
            max_threads=max_refresh_threads,
            timeout_s=refresh_timeout_s,
            clock=self._clock,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        executor: ThreadPoolExecutor | None = None,
        lifecycle_notification_url: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> MicrosoftCalendarProvider:
        """A provider configured from ``IW_MICROSOFT_*`` settings (client id and secret
        required) and ``IW_CA_BUNDLE``."""
        if settings.microsoft_client_id is None or settings.microsoft_client_secret is None:
            raise ValueError("IW_MICROSOFT_CLIENT_ID and IW_MICROSOFT_CLIENT_SECRET must be set")
        return cls(
            session,
            authority=settings.microsoft_authority,
            graph_base_url=settings.microsoft_graph_base_url,
            graph_beta_base_url=settings.microsoft_graph_beta_base_url,
            client_id=settings.microsoft_client_id,
            client_secret=settings.microsoft_client_secret.get_secret_value(),
            scopes=settings.microsoft_scopes,
            sync_other_calendars=settings.microsoft_sync_other_calendars,
            ca_bundle=settings.ca_bundle,
            lifecycle_notification_url=lifecycle_notification_url,
            executor=executor,
            page_size=page_size,
        )

    def __repr__(self) -> str:
        return f"MicrosoftCalendarProvider(graph_base_url={self._base_url!r})"

    async def aclose(self) -> None:
        """Release the refresh threads and their sessions (the aiohttp session is the caller's)."""
        await self._refresher.aclose()

    # --- auth ------------------------------------------------------------------------------

    async def refresh_access_token(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token through msal (off the loop); see ``auth``."""
        return await self._refresher.refresh(refresh_token)

    async def identify(self, access_token: str) -> str | None:
        """None: msal always asks for ``openid``, so every refresh answer names the subject
        (its id_token or client_info) and there is nothing more to ask Graph."""
        del access_token
        return None

    # --- reads -----------------------------------------------------------------------------

    async def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        """Every calendar of the mailbox (following ``@odata.nextLink``); the default one is
        ``primary``, the others are ``synced`` only when other calendars sync."""
        calendars: list[CalendarInfo] = []
        url: str | URL = self._base_url + "me/calendars"
        seen: set[str] = set()
        while True:
            body = await self._json_call(access_token, "GET", url, "calendars.list")
            try:
                calendars.extend(
                    mapping.parse_calendar(entry, sync_others=self._sync_others)
                    for entry in _value(body)
                )
                next_link = _link(body, "@odata.nextLink")
            except MalformedPayload as exc:
                raise _malformed("calendars.list", exc) from None
            if next_link is None:
                return calendars
            if not cursors.on_base(next_link, self._base_url):
                raise Transient("Graph calendars.list linked off the Graph host", provider=PROVIDER)
            if next_link in seen:  # a looping server would otherwise spin forever
                raise Transient("Graph calendars.list repeated a page", provider=PROVIDER)
            seen.add(next_link)
            url = _verbatim(next_link)

    def _delta_base(self, calendar_id: str) -> str:
        """The API base a calendar's delta runs on: v1.0 for primary, beta for the others."""
        if calendar_id == PRIMARY:
            return self._base_url
        if not self._sync_others:
            raise Permanent(
                "Graph sync of non-default calendars is disabled",
                provider=PROVIDER,
                reason="not_synced",
            )
        return self._beta_url

    async def fetch_sync_page(
        self,
        access_token: str,
        calendar_id: str,
        *,
        window: SyncWindow,
        delta_token: str | None = None,
        cursor: str | None = None,
    ) -> SyncPage:
        """One calendarView delta page: continue ``cursor``, else increment from
        ``delta_token`` (a deltaLink), else start a full round over ``window``."""
        base = self._delta_base(calendar_id)
        url, full_sync = self._round_url(base, calendar_id, window, delta_token, cursor)
        response = await self._request(access_token, "GET", url, page_size=self._page_size)
        if not 200 <= response.status < 300:
            raise self._error(response, "calendarView.delta", sync=True)
        try:
            return self._sync_page(_json_object(response), base, calendar_id, full_sync)
        except MalformedPayload as exc:
            raise _malformed("calendarView.delta", exc) from None

    def _round_url(
        self,
        base: str,
        calendar_id: str,
        window: SyncWindow,
        delta_token: str | None,
        cursor: str | None,
    ) -> tuple[str | URL, bool]:
        """The URL of the page to fetch and whether its round is a full sync."""
        if cursor is not None:
            try:
                decoded = cursors.decode(cursor)
            except ValueError:
                # Only a full resync recovers from a cursor we cannot read.
                raise SyncStateExpired(
                    "unreadable Graph sync cursor", provider=PROVIDER, reason="badCursor"
                ) from None
            if decoded.calendar_id != calendar_id:
                raise SyncStateExpired(
                    "Graph sync cursor of another calendar", provider=PROVIDER, reason="badCursor"
                )
            return self._stored_link(decoded.link, base), decoded.full_sync
        if delta_token is not None:
            return self._stored_link(delta_token, base), False
        try:
            params = {
                "startDateTime": mapping.format_instant(window.start),
                "endDateTime": mapping.format_instant(window.end),
            }
        except ValueError:
            raise Permanent("sync window must be timezone-aware", provider=PROVIDER) from None
        path = (
            "me/calendarView/delta"
            if calendar_id == PRIMARY
            else f"me/calendars/{_segment(calendar_id)}/calendarView/delta"
        )
        return str(URL(base + path).with_query(params)), True

    @staticmethod
    def _stored_link(link: str, base: str) -> URL:
        # A stored link off our Graph base is never followed: it would carry the bearer token
        # elsewhere. Pages are checked, so it was stored under another base URL (a national
        # cloud, a proxy): sync state that no longer applies, which a full round replaces.
        if not cursors.on_base(link, base):
            raise SyncStateExpired(
                "stored Graph link is not on the configured Graph host",
                provider=PROVIDER,
                reason="foreignLink",
            )
        return _verbatim(link)

    def _sync_page(
        self, body: Mapping[str, Any], base: str, calendar_id: str, full_sync: bool
    ) -> SyncPage:
        upserts: list[Event] = []
        removals: list[EventRemoval] = []
        aside: list[SetAside] = []
        for item in _value(body):
            try:
                parsed = mapping.parse_event_item(item, calendar_id)
            except MalformedPayload as exc:  # this item alone; the page goes on
                aside.append(payload.set_aside(item, exc))
                continue
            if isinstance(parsed, EventRemoval):
                removals.append(parsed)
            elif parsed is not None:
                upserts.append(parsed)
        next_link = _link(body, "@odata.nextLink")
        delta_link = _link(body, "@odata.deltaLink")
        if (next_link is None) == (delta_link is None):
            raise MalformedPayload("a page needs exactly one of nextLink and deltaLink")
        link = next_link or delta_link
        assert link is not None
        if not cursors.on_base(link, base):
            raise MalformedPayload("a page links off the configured Graph host")
        if next_link is not None:
            next_cursor = cursors.encode(cursors.SyncCursor(calendar_id, full_sync, next_link))
            return SyncPage(
                tuple(upserts),
                tuple(removals),
                next_cursor=next_cursor,
                full_sync=full_sync,
                set_aside=tuple(aside),
            )
        return SyncPage(
            tuple(upserts),
            tuple(removals),
            delta_token=delta_link,
            full_sync=full_sync,
            set_aside=tuple(aside),
        )

    # --- push ------------------------------------------------------------------------------

    def _expiration(self, ttl_s: int) -> str:
        lifetime = min(timedelta(seconds=ttl_s), MAX_SUBSCRIPTION_LIFETIME - SUBSCRIPTION_MARGIN)
        return mapping.format_instant(self._clock() + lifetime)

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
        """POST /subscriptions on the calendar's events. Graph assigns the subscription id, so
        the channel's id is Graph's and ``channel_id`` is not used; ``token`` is the
        clientState. Lifecycle notifications go to the configured URL, else to ``address``."""
        del channel_id  # Graph names subscriptions itself
        if not 0 < len(token) <= MAX_CLIENT_STATE_LENGTH:
            raise Permanent("clientState must be 1..128 characters", provider=PROVIDER)
        if ttl_s <= 0:
            raise Permanent("subscription ttl must be positive", provider=PROVIDER)
        if calendar_id == PRIMARY:
            resource = "/me/events"
        else:
            self._delta_base(calendar_id)  # Permanent unless other calendars sync
            resource = f"/me/calendars/{_segment(calendar_id)}/events"
        request = {
            "changeType": CHANGE_TYPES,
            "notificationUrl": address,
            "lifecycleNotificationUrl": self._lifecycle_url or address,
            "resource": resource,
            "expirationDateTime": self._expiration(ttl_s),
            "clientState": token,
        }
        body = await self._json_call(
            access_token,
            "POST",
            self._base_url + "subscriptions",
            "subscriptions.create",
            json_body=request,
        )
        return _channel(body, calendar_id, token, "subscriptions.create")

    async def stop_push(self, access_token: str, channel: PushChannel) -> None:
        """DELETE /subscriptions/{id}; a subscription Graph no longer knows counts as stopped."""
        response = await self._request(
            access_token, "DELETE", self._base_url + f"subscriptions/{_segment(channel.id)}"
        )
        if response.status == 404 or 200 <= response.status < 300:
            return
        raise self._error(response, "subscriptions.delete")

    def parse_notifications(self, headers: Mapping[str, str], body: bytes) -> list[Notification]:
        """A batched Graph notification POST (change or lifecycle), not yet verified."""
        return parse_notifications(headers, body)

    # --- writes ----------------------------------------------------------------------------

    def _events_url(self, calendar_id: str) -> str:
        if calendar_id == PRIMARY:
            return self._base_url + "me/events"
        return self._base_url + f"me/calendars/{_segment(calendar_id)}/events"

    def _event_url(self, event_id: str) -> str:
        # Event ids are unique within the mailbox, so one path serves every calendar.
        return self._base_url + f"me/events/{_segment(event_id)}"

    async def create_event(
        self, access_token: str, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """POST an event with a ``transactionId`` derived from the key: Graph answers a replay
        with the event the first call created."""
        body = mapping.draft_body(
            draft, transaction_id=mapping.transaction_id_for_key(idempotency_key)
        )
        response = await self._request(
            access_token, "POST", self._events_url(calendar_id), json_body=body
        )
        return self._live_event(response, calendar_id, "events.create")

    async def update_event(
        self,
        access_token: str,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """PATCH the draft's fields (attendees and the rest stay as the user set them); with
        ``etag``, ``If-Match`` makes a changed event a Conflict (412)."""
        response = await self._request(
            access_token,
            "PATCH",
            self._event_url(event_id),
            json_body=mapping.draft_body(draft, clear_absent=True),
            etag=etag,
        )
        return self._live_event(response, calendar_id, "events.update")

    async def delete_event(
        self, access_token: str, calendar_id: str, event_id: str, *, etag: str | None = None
    ) -> None:
        """DELETE an event; 404 (and 410) mean already gone; 412 is Conflict."""
        response = await self._request(
            access_token,
            "DELETE",
            self._event_url(event_id),
            etag=etag,
        )
        if response.status in (404, 410) or 200 <= response.status < 300:
            return
        raise self._error(response, "events.delete")

    # --- reads of our own events -----------------------------------------------------------

    async def get_event(self, access_token: str, calendar_id: str, event_id: str) -> Event | None:
        """GET one event with our binding property expanded; None on 404 (or 410). The etag is
        ``@odata.etag``, as sync pages report it."""
        url = _with_query(self._event_url(event_id), {"$expand": mapping.BINDING_EXPAND})
        response = await self._request(access_token, "GET", url)
        if response.status in (404, 410):
            return None
        if not 200 <= response.status < 300:
            raise self._error(response, "events.get")
        try:
            parsed = mapping.parse_event_item(
                _json_object(response), calendar_id, include_masters=True
            )
            if not isinstance(parsed, Event):
                raise MalformedPayload("event is a removal where an event was expected")
        except MalformedPayload as exc:
            raise _malformed("events.get", exc) from None
        return parsed

    async def find_bound_event(
        self, access_token: str, calendar_id: str, binding_id: str
    ) -> Event | None:
        """List the calendar's events (singles and series masters) filtered by our binding
        property, expanded so the binding can be checked, following ``@odata.nextLink``."""
        params = {
            "$filter": mapping.binding_filter(binding_id),
            "$expand": mapping.BINDING_EXPAND,
        }
        url: URL = _with_query(self._events_url(calendar_id), params)
        for _ in range(MAX_FIND_PAGES):
            body = await self._json_call(access_token, "GET", url, "events.list")
            try:
                found = _bound_item(body, calendar_id, binding_id)
                next_link = _link(body, "@odata.nextLink")
            except MalformedPayload as exc:
                raise _malformed("events.list", exc) from None
            if found is not None or next_link is None:
                return found
            if not cursors.on_base(next_link, self._base_url):
                raise Transient("Graph events.list linked off the Graph host", provider=PROVIDER)
            url = _verbatim(next_link)
        raise Transient("Graph events.list paged without end", provider=PROVIDER)

    # --- HTTP plumbing ---------------------------------------------------------------------

    async def _request(
        self,
        access_token: str,
        method: str,
        url: str | URL,
        *,
        json_body: Any = None,
        etag: str | None = None,
        page_size: int | None = None,
    ) -> HttpResponse:
        prefer = 'outlook.timezone="UTC"'
        if page_size is not None:
            # One Prefer header with both preferences (RFC 7240 allows a list).
            prefer += f", odata.maxpagesize={page_size}"
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json",
            "Prefer": prefer,
        }
        if etag is not None:
            headers["If-Match"] = etag
        return await send(
            self._session, method, url, provider=PROVIDER, headers=headers, json_body=json_body
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
        url: str | URL,
        operation: str,
        *,
        json_body: Any = None,
    ) -> Mapping[str, Any]:
        response = await self._request(access_token, method, url, json_body=json_body)
        if not 200 <= response.status < 300:
            raise self._error(response, operation)
        try:
            return _json_object(response)
        except MalformedPayload as exc:
            raise _malformed(operation, exc) from None

    def _live_event(self, response: HttpResponse, calendar_id: str, operation: str) -> Event:
        if not 200 <= response.status < 300:
            raise self._error(response, operation)
        try:
            return mapping.parse_live_event(_json_object(response), calendar_id)
        except MalformedPayload as exc:
            raise _malformed(operation, exc) from None


def _with_query(url: str, params: Mapping[str, str]) -> URL:
    """``url`` with a query whose values are percent-encoded (``%20`` for spaces, never ``+``),
    marked encoded so aiohttp sends it as built."""
    return URL(url + "?" + urlencode(params, safe="$()'", quote_via=quote), encoded=True)


def _bound_item(body: Mapping[str, Any], calendar_id: str, binding_id: str) -> Event | None:
    """The first live event of a filtered page whose expanded binding is ``binding_id``.

    An item without the expanded property does not count: adopting a stranger's event (and
    later updating or deleting it) is worse than creating ours a second time."""
    for item in _value(body):
        parsed = mapping.parse_event_item(item, calendar_id, include_masters=True)
        if isinstance(parsed, Event) and mapping.same_binding(parsed.binding_id, binding_id):
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


def _value(body: Mapping[str, Any]) -> list[Any]:
    items = body.get("value")
    if not isinstance(items, list):
        raise MalformedPayload("value is not a list")
    return items


def _link(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{key} is not a non-empty string")
    return value


def _channel(body: Mapping[str, Any], calendar_id: str, token: str, operation: str) -> PushChannel:
    """A subscription body as a ``PushChannel`` (clientState kept out of ``raw``)."""
    try:
        subscription_id = payload.read_str(body, "id", "subscription")
        expiry = payload.opt_str(body, "expirationDateTime", "subscription")
        expires_at = (
            None
            if expiry is None
            else mapping.parse_instant(expiry, "subscription.expirationDateTime")
        )
    except MalformedPayload as exc:
        raise _malformed(operation, exc) from None
    return PushChannel(
        id=subscription_id,
        calendar_id=calendar_id,
        resource_id=None,  # Graph notifications name the subscription, not a resource id
        expires_at=expires_at,
        token=token,
        raw={key: value for key, value in body.items() if key != "clientState"},
    )


def _malformed(operation: str, exc: MalformedPayload) -> Transient:
    # The field name is safe to show; the payload's values are not repeated.
    return Transient(f"Graph {operation} answered malformed: {exc}", provider=PROVIDER)
