"""Graph change-notification subscriptions and webhook delivery (validation handshake, batched
change notifications, lifecycle notifications, retries).

Invariants: a subscription exists only after BOTH its notificationUrl and lifecycleNotificationUrl
answered the validation POST with 200, ``text/plain`` and the decoded token within the
validation timeout; notifications queued within ``coalesce_s`` for the same URL leave in ONE
POST (several subscriptions may share it); a delivery that gets no 2xx within ``ack_timeout_s``
is retried after each of ``retry_delays`` and then given up; every delivery runs in a named task
the hub references until it ends, and close() cancels them all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from sandbox.emulators.shared.clock import Clock

from .errors import GraphError, bad_request
from .times import format_timestamp, parse_timestamp

CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
MAX_CLIENT_STATE = 128


@dataclass
class Subscription:
    id: str
    user_id: str
    tenant_id: str
    client_id: str
    resource: str
    calendar_id: str | None
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime
    paused: bool = False
    held: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, graph_base: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{graph_base}$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.client_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": format_timestamp(self.expires),
            "creatorId": self.user_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


@dataclass
class Delivery:
    """One POST (possibly retried) to a receiver, for tests and diagnostics."""

    url: str
    kind: str  # change | lifecycle
    items: list[dict[str, Any]]
    outcome: str = "pending"
    attempts: int = 0
    statuses: list[int | None] = field(default_factory=list)


class SubscriptionHub:
    """Owns subscriptions, the outgoing batches and the delivery tasks."""

    def __init__(
        self,
        clock: Clock,
        *,
        require_https: bool = False,
        max_lifetime: timedelta = timedelta(minutes=10080),
        coalesce_s: float = 0.05,
        validation_timeout_s: float = 10.0,
        ack_timeout_s: float = 3.0,
        retry_delays: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8),
    ) -> None:
        self.clock = clock
        self.require_https = require_https
        self.max_lifetime = max_lifetime
        self.coalesce_s = coalesce_s
        self.validation_timeout_s = validation_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.retry_delays = retry_delays
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[Delivery] = []
        self.drop_next = 0
        self.duplicate_next = 0
        self.graph_base = ""
        self._pending: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- CRUD ------------------------------------------------------------------------------

    async def create(
        self,
        *,
        user_id: str,
        upn: str,
        tenant_id: str,
        client_id: str,
        body: Any,
        calendars: set[str],
    ) -> Subscription:
        """POST /subscriptions: validate the body, run both handshakes, then store it."""
        if not isinstance(body, dict):
            raise GraphError(400, "InvalidRequest", "A JSON object is required.")
        change_types = self._change_types(body.get("changeType"))
        resource = body.get("resource")
        if not isinstance(resource, str):
            raise GraphError(400, "InvalidRequest", "The 'resource' property is required.")
        calendar_id = _resource_scope(resource, user_id, upn, calendars)
        url = self._url(body.get("notificationUrl"), "notificationUrl")
        lifecycle = body.get("lifecycleNotificationUrl")
        lifecycle_url = (
            None if lifecycle is None else self._url(lifecycle, "lifecycleNotificationUrl")
        )
        client_state = body.get("clientState")
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE
        ):
            raise GraphError(
                400, "InvalidRequest", f"clientState must be at most {MAX_CLIENT_STATE} characters."
            )
        expires = self._expiry(body.get("expirationDateTime"))
        await self._validate(url)
        if lifecycle_url is not None:
            await self._validate(lifecycle_url)
        sub = Subscription(
            str(uuid.uuid4()),
            user_id,
            tenant_id,
            client_id,
            resource,
            calendar_id,
            change_types,
            url,
            lifecycle_url,
            client_state,
            expires,
        )
        self.subscriptions[sub.id] = sub
        return sub

    def get(self, user_id: str, sub_id: str) -> Subscription:
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.user_id != user_id:
            raise GraphError(
                404, "ResourceNotFound", f"The object was not found. Subscription Id '{sub_id}'."
            )
        if sub.expires <= self.clock.now():
            del self.subscriptions[sub_id]
            raise GraphError(
                404, "ResourceNotFound", f"The object was not found. Subscription Id '{sub_id}'."
            )
        return sub

    def renew(self, user_id: str, sub_id: str, body: Any) -> Subscription:
        """PATCH: only expirationDateTime (and notificationUrl) may change."""
        sub = self.get(user_id, sub_id)
        if not isinstance(body, dict):
            raise GraphError(400, "InvalidRequest", "A JSON object is required.")
        if "lifecycleNotificationUrl" in body:
            raise GraphError(
                400,
                "InvalidRequest",
                "lifecycleNotificationUrl cannot be added or changed on an existing "
                "subscription; create a new subscription instead.",
            )
        unknown = set(body) - {"expirationDateTime", "notificationUrl"}
        if unknown:
            raise GraphError(400, "InvalidRequest", f"Cannot update {sorted(unknown)}.")
        if "expirationDateTime" in body:
            sub.expires = self._expiry(body["expirationDateTime"])
        self._resume(sub)
        return sub

    def reauthorize(self, user_id: str, sub_id: str) -> None:
        self._resume(self.get(user_id, sub_id))

    def delete(self, user_id: str, sub_id: str) -> None:
        self.get(user_id, sub_id)
        del self.subscriptions[sub_id]

    # --- notifications ---------------------------------------------------------------------

    def on_change(
        self, user_id: str, calendar_id: str, event_id: str, change_type: str, etag: str
    ) -> None:
        """Store listener: queue a change notification for every matching subscription."""
        now = self.clock.now()
        for sub in list(self.subscriptions.values()):
            if sub.user_id != user_id or change_type not in sub.change_types:
                continue
            if sub.calendar_id is not None and sub.calendar_id != calendar_id:
                continue
            if sub.expires <= now:
                del self.subscriptions[sub.id]
                continue
            path = f"Users/{user_id}/Events/{event_id}"
            item: dict[str, Any] = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": _offset_stamp(sub.expires),
                "changeType": change_type,
                "resource": path,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "@odata.id": path,
                    "@odata.etag": etag,
                    "id": event_id,
                },
                "clientState": sub.client_state,
                "tenantId": sub.tenant_id,
            }
            if sub.paused:
                sub.held.append(item)
            else:
                self._queue("change", sub.notification_url, item)

    def fire_lifecycle(self, sub_id: str, event: str) -> None:
        """Send a lifecycle notification now (subscriptionRemoved also deletes it)."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(
                f"unknown lifecycle event {event!r}; known: {sorted(LIFECYCLE_EVENTS)}"
            )
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise KeyError(f"unknown subscription {sub_id!r}")
        if sub.lifecycle_url is None:
            raise ValueError("the subscription has no lifecycleNotificationUrl")
        if event == "subscriptionRemoved":
            del self.subscriptions[sub_id]
        elif event == "reauthorizationRequired":
            # Change notifications wait until the app reauthorizes or renews.
            sub.paused = True
        self._queue(
            "lifecycle",
            sub.lifecycle_url,
            {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": _offset_stamp(sub.expires),
                "tenantId": sub.tenant_id,
                "clientState": sub.client_state,
                "lifecycleEvent": event,
            },
        )

    def _resume(self, sub: Subscription) -> None:
        sub.paused = False
        held, sub.held = sub.held, []
        for item in held:
            self._queue("change", sub.notification_url, item)

    def _queue(self, kind: str, url: str, item: dict[str, Any]) -> None:
        if self.drop_next > 0:
            self.drop_next -= 1
            self.deliveries.append(Delivery(url, kind, [item], outcome="dropped"))
            return
        copies = 1
        if self.duplicate_next > 0:
            self.duplicate_next -= 1
            copies = 2
        key = (kind, url)
        first = key not in self._pending
        self._pending.setdefault(key, []).extend([item] * copies)
        if first and self._session is not None:
            self._spawn(self._flush_later(key), f"graph-notify[{kind}:{url}]")

    async def _flush_later(self, key: tuple[str, str]) -> None:
        # Coalesce: whatever else arrives for this URL meanwhile rides in the same POST.
        await asyncio.sleep(self.coalesce_s)
        items = self._pending.pop(key, [])
        if items:
            delivery = Delivery(key[1], key[0], items)
            self.deliveries.append(delivery)
            await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        session = self._session
        if session is None:
            return
        timeout = aiohttp.ClientTimeout(total=self.ack_timeout_s)
        for delay in (0.0, *self.retry_delays):
            if delay:
                await asyncio.sleep(delay)
            delivery.attempts += 1
            status: int | None
            try:
                async with session.post(
                    URL(delivery.url, encoded=True),
                    json={"value": delivery.items},
                    timeout=timeout,
                ) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            delivery.statuses.append(status)
            if status is not None and 200 <= status < 300:
                delivery.outcome = "delivered"
                return
        delivery.outcome = "failed"

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- validation ------------------------------------------------------------------------

    async def _validate(self, url: str) -> None:
        """The handshake: POST ?validationToken=..., expect the decoded token back as text."""
        session = self._session
        if session is None:
            raise GraphError(503, "serviceNotAvailable", "The emulator is not running.")
        token = (
            "Validation: Testing client application reachability for subscription Request-Id: "
            f"{uuid.uuid4()}"
        )
        sep = "&" if "?" in url else "?"
        target = URL(f"{url}{sep}validationToken={quote(token, safe='')}", encoded=True)
        timeout = aiohttp.ClientTimeout(total=self.validation_timeout_s)
        try:
            async with session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=timeout,
            ) as resp:
                status, ctype, text = resp.status, resp.content_type, await resp.text()
        except TimeoutError as exc:
            raise bad_request(
                "Subscription validation request timed out.", "ValidationError"
            ) from exc
        except aiohttp.ClientError as exc:
            raise bad_request(
                f"Subscription validation request failed. Notification endpoint must respond "
                f"with 200 OK to validation request. ({exc.__class__.__name__})",
                "ValidationError",
            ) from exc
        if status != 200:
            raise bad_request(
                "Subscription validation request failed. Notification endpoint must respond with "
                f"200 OK to validation request. Response status code: {status}.",
                "ValidationError",
            )
        if ctype != "text/plain":
            raise bad_request(
                "Subscription validation request failed. Must respond with 200 OK and "
                "Content-Type text/plain to this request.",
                "ValidationError",
            )
        if text != token:
            raise bad_request(
                "Subscription validation request failed. Response must exactly match "
                "validationToken query parameter.",
                "ValidationError",
            )

    def _url(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise GraphError(400, "InvalidRequest", f"The '{name}' property is required.")
        if self.require_https and not value.startswith("https://"):
            raise GraphError(400, "InvalidRequest", f"The '{name}' must be an HTTPS URL.")
        return value

    def _change_types(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, str) or not value.strip():
            raise GraphError(400, "InvalidRequest", "The 'changeType' property is required.")
        kinds = tuple(v.strip() for v in value.split(","))
        bad = [k for k in kinds if k not in CHANGE_TYPES]
        if bad:
            raise GraphError(400, "InvalidRequest", f"Invalid changeType value '{bad[0]}'.")
        return kinds

    def _expiry(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
        try:
            moment = parse_timestamp(value)
        except ValueError as exc:
            raise GraphError(400, "InvalidRequest", "expirationDateTime is invalid.") from exc
        now = self.clock.now()
        if moment <= now:
            raise GraphError(
                400, "ExtensionError", "Subscription expiration date must be in the future."
            )
        if moment > now + self.max_lifetime:
            minutes = int(self.max_lifetime.total_seconds() // 60)
            raise GraphError(
                400,
                "ExtensionError",
                f"Subscription expiration can only be {minutes} minutes in the future.",
            )
        return moment


def _resource_scope(resource: str, user_id: str, upn: str, calendars: set[str]) -> str | None:
    """The calendar a resource path limits notifications to (None: all the user's events)."""
    parts = resource.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if lowered[:1] == ["me"]:
        rest = parts[1:]
    elif lowered[:1] == ["users"] and len(parts) > 1:
        if parts[1].lower() not in (user_id.lower(), upn.lower()):
            raise GraphError(403, "ExtensionError", "Operation: Create; Exception: Access denied.")
        rest = parts[2:]
    else:
        rest = []
    if [r.lower() for r in rest] == ["events"]:
        return None
    if len(rest) == 3 and rest[0].lower() == "calendars" and rest[2].lower() == "events":
        if rest[1] not in calendars:
            raise GraphError(404, "ResourceNotFound", "The calendar was not found.")
        return rest[1]
    raise GraphError(
        400, "InvalidRequest", f"Resource '{resource}' is not supported by this emulator."
    )


def _offset_stamp(moment: datetime) -> str:
    """``2019-09-18T17:11:50.1138326+00:00``: the form observed in Outlook notifications."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0+00:00"
