"""The interface an account actor uses to talk to any calendar provider.

Invariants:
- every method takes the access token explicitly: the actor owns tokens, refresh and retry;
- every failure is a ``providers.errors.ProviderError`` (never a transport exception);
- sync is page by page (``fetch_sync_page``) so the caller commits each page with its cursor;
- writes are idempotent: a create replayed with the same ``idempotency_key`` yields the same
  event, a delete of an event already gone succeeds;
- a draft's ``binding_id`` goes into a private extended property on create and update, so
  ``find_bound_event`` finds the event a create whose outcome is unknown may have made;
- reads of one event (``get_event``, ``find_bound_event``) answer None for "gone", never
  NotFound for the event itself; a missing calendar raises NotFound from ``find_bound_event``
  but is None from ``get_event`` (both providers answer the same 404 for either).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from providers.capabilities import Capabilities
from providers.errors import InvalidNotification
from providers.models import (
    CalendarInfo,
    Event,
    EventDraft,
    Notification,
    PushChannel,
    SyncPage,
    SyncWindow,
    TokenGrant,
)

# Refresh this long before expiry, so a call never starts with a token about to lapse.
REFRESH_MARGIN = timedelta(minutes=5)


class CalendarProvider(Protocol):
    """One provider's client (Google, Microsoft, ...); one instance serves a whole replica."""

    name: str
    capabilities: Capabilities  # what the provider can do (``providers.capabilities``)

    async def refresh_access_token(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token for a new access token (and maybe a rotated refresh token)."""
        ...

    async def identify(self, access_token: str) -> str | None:
        """The account's stable subject asked of the provider (for a refresh answer that named
        none); None when the grant does not let the provider say."""
        ...

    async def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        """Every calendar of the account."""
        ...

    async def fetch_sync_page(
        self,
        access_token: str,
        calendar_id: str,
        *,
        window: SyncWindow,
        delta_token: str | None = None,
        cursor: str | None = None,
    ) -> SyncPage:
        """One page of changes: continue ``cursor``, else increment from ``delta_token``, else a
        full sync over ``window``."""
        ...

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
        """Open a notification channel to ``address``; replacing one is start-new, stop-old."""
        ...

    async def stop_push(self, access_token: str, channel: PushChannel) -> None:
        """Close a channel; one the provider no longer knows counts as closed."""
        ...

    async def create_event(
        self, access_token: str, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """Create an event; replaying the same key returns the event created the first time."""
        ...

    async def update_event(
        self,
        access_token: str,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """Replace an event's fields; with ``etag``, only if it is unchanged (else Conflict)."""
        ...

    async def delete_event(
        self, access_token: str, calendar_id: str, event_id: str, *, etag: str | None = None
    ) -> None:
        """Delete an event; an event already gone counts as deleted."""
        ...

    async def get_event(self, access_token: str, calendar_id: str, event_id: str) -> Event | None:
        """The live event with its current etag (as sync pages report it), or None if gone."""
        ...

    async def find_bound_event(
        self, access_token: str, calendar_id: str, binding_id: str
    ) -> Event | None:
        """The live event we wrote for ``binding_id`` (look before retrying a create whose
        outcome is unknown), or None."""
        ...

    def parse_notifications(self, headers: Mapping[str, str], body: bytes) -> list[Notification]:
        """Parse one webhook request (Graph batches several); InvalidNotification if malformed."""
        ...

    async def aclose(self) -> None:
        """Release what the client owns (refresh threads); the shared HTTP session is not its."""
        ...


def needs_refresh(expires_at: datetime | None, now: datetime) -> bool:
    """Whether an access token expiring at ``expires_at`` must be refreshed before a call."""
    return expires_at is None or expires_at - now <= REFRESH_MARGIN


def verify_notification(notification: Notification, channel: PushChannel) -> None:
    """Check a notification against the channel we hold; InvalidNotification if forged."""
    if notification.channel_id != channel.id:
        raise InvalidNotification("notification for another channel")
    if channel.resource_id is not None and notification.resource_id not in (
        None,
        channel.resource_id,
    ):
        raise InvalidNotification("notification for another resource")
    given = (notification.token or "").encode()
    if not hmac.compare_digest(given, channel.token.encode()):
        raise InvalidNotification("notification token does not match the channel's")
