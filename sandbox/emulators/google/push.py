"""Watch channels and push-notification delivery (events.watch, channels.stop).

Invariants: each channel's first message is ``sync`` with number 1, later ones are ``exists``
with strictly increasing, never consecutive numbers; bodies are empty; every delivery runs in a
named task the hub references until it ends, and close() cancels them all.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from sandbox.emulators.shared.clock import Clock

from .errors import ApiError

DEFAULT_TTL_S = 604800
_OK = frozenset({102, 200, 201, 202, 204})
_RETRYABLE = frozenset({500, 502, 503, 504})


@dataclass
class Channel:
    id: str
    resource_id: str
    resource_uri: str
    address: str
    calendar_id: str
    email: str
    client_id: str
    token: str | None
    expiration_ms: int | None
    last_number: int = 1

    def resource(self) -> dict[str, Any]:
        """The ``api#channel`` watch response (expiration as a string, as observed)."""
        out: dict[str, Any] = {
            "kind": "api#channel",
            "id": self.id,
            "resourceId": self.resource_id,
            "resourceUri": self.resource_uri,
        }
        if self.token is not None:
            out["token"] = self.token
        if self.expiration_ms is not None:
            out["expiration"] = str(self.expiration_ms)
        return out


@dataclass
class Delivery:
    """One notification attempt series, for tests and diagnostics."""

    channel_id: str
    state: str
    number: int
    outcome: str = "pending"
    attempts: int = 0
    statuses: list[int | None] = field(default_factory=list)


class PushHub:
    """Owns the channels, their message numbers and the delivery tasks."""

    def __init__(
        self,
        clock: Clock,
        *,
        require_https: bool = False,
        retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4),
        sync_wait_s: float = 1.0,
        delivery_timeout_s: float = 5.0,
    ) -> None:
        self.clock = clock
        self.require_https = require_https
        self.retry_delays = retry_delays
        self.sync_wait_s = sync_wait_s
        self.delivery_timeout_s = delivery_timeout_s
        self.channels: dict[str, Channel] = {}
        self.resource_ids: dict[str, str] = {}
        self.deliveries: list[Delivery] = []
        self.drop_next = 0
        self.duplicate_next = 0
        # Google may grant an expiration earlier than asked (a cap on what it grants), and a
        # message may arrive seconds after it was sent (each delivery waits a random delay).
        self.max_lifetime_s: float | None = None
        # Calendars events.watch refuses (Google: holiday, birthday and some shared ones).
        self.unwatchable: set[str] = set()
        self.delivery_delay_s: tuple[float, float] = (0.0, 0.0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.delivery_timeout_s)
        )

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def watch(
        self, calendar_id: str, email: str, client_id: str, body: Any, api_base_url: str
    ) -> Channel:
        """Create a channel from an events.watch body and send its ``sync`` message."""
        if calendar_id in self.unwatchable:
            raise ApiError(
                400,
                "pushNotSupportedForRequestedResource",
                "Push notifications are not supported by this resource.",
            )
        channel = self._new_channel(calendar_id, email, client_id, body, api_base_url)
        self.channels[channel.id] = channel
        task = self._send(channel, "sync", 1)
        if task is not None and self.sync_wait_s > 0:
            # Google may deliver the sync message before the watch response; do so by default.
            await asyncio.wait({task}, timeout=self.sync_wait_s)
        return channel

    def stop(self, email: str, client_id: str, body: Any, project_number: str) -> None:
        """channels.stop: only the creating user and client can stop a channel."""
        if not isinstance(body, dict) or not body.get("id") or not body.get("resourceId"):
            raise ApiError(400, "required", "Required parameter: id and resourceId")
        channel = self.channels.get(str(body["id"]))
        if (
            channel is None
            or channel.resource_id != body["resourceId"]
            or (channel.email, channel.client_id) != (email, client_id)
        ):
            message = f"Channel '{body['id']}' not found for project '{project_number}'"
            raise ApiError(404, "notFound", message)
        del self.channels[channel.id]

    def on_change(self, calendar_id: str) -> None:
        """Store listener: an ``exists`` message to every live channel on the calendar."""
        now_ms = int(self.clock.now().timestamp() * 1000)
        for channel in list(self.channels.values()):
            if channel.calendar_id != calendar_id:
                continue
            if channel.expiration_ms is not None and channel.expiration_ms <= now_ms:
                del self.channels[channel.id]
                continue
            channel.last_number += self._rng.randint(2, 64)
            self._send(channel, "exists", channel.last_number)

    def _new_channel(
        self, calendar_id: str, email: str, client_id: str, body: Any, api_base_url: str
    ) -> Channel:
        if not isinstance(body, dict):
            raise ApiError(400, "parseError", "Parse Error")
        channel_id, address, token = body.get("id"), body.get("address"), body.get("token")
        if not isinstance(channel_id, str) or not channel_id:
            raise ApiError(400, "required", "Required: id")
        if len(channel_id) > 64:
            raise ApiError(400, "invalid", "Channel id must be at most 64 characters.")
        if channel_id in self.channels:
            raise ApiError(400, "channelIdNotUnique", "Channel id not unique")
        if body.get("type") not in ("web_hook", "webhook"):
            raise ApiError(400, "invalid", f"Invalid value for type: {body.get('type')}")
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise ApiError(400, "required", "Required: address")
        if self.require_https and not address.startswith("https://"):
            raise ApiError(
                400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}"
            )
        if token is not None and (not isinstance(token, str) or len(token) > 256):
            raise ApiError(400, "invalid", "Channel token must be at most 256 characters.")
        params = body.get("params") or {}
        try:
            ttl = int(params.get("ttl", DEFAULT_TTL_S))
            asked = int(body["expiration"]) if body.get("expiration") is not None else None
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "invalid", "Invalid ttl or expiration") from exc
        expiration = int((self.clock.now() + timedelta(seconds=ttl)).timestamp() * 1000)
        if asked is not None:
            expiration = min(expiration, asked)
        if self.max_lifetime_s is not None:
            granted = self.clock.now() + timedelta(seconds=self.max_lifetime_s)
            expiration = min(expiration, int(granted.timestamp() * 1000))
        resource_id = self.resource_ids.setdefault(calendar_id, secrets.token_urlsafe(20))
        uri = f"{api_base_url}calendars/{quote(calendar_id, safe='@')}/events?alt=json"
        return Channel(
            channel_id, resource_id, uri, address, calendar_id, email, client_id, token, expiration
        )

    def _send(self, channel: Channel, state: str, number: int) -> asyncio.Task[None] | None:
        if self._session is None:
            return None
        if self.drop_next > 0:
            self.drop_next -= 1
            self.deliveries.append(Delivery(channel.id, state, number, outcome="dropped"))
            return None
        copies = 1
        if self.duplicate_next > 0:
            self.duplicate_next -= 1
            copies = 2
        task = None
        for _ in range(copies):
            delivery = Delivery(channel.id, state, number)
            self.deliveries.append(delivery)
            task = self._spawn(
                self._deliver(channel, delivery), f"google-push[{channel.id}#{number}]"
            )
        return task

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, channel: Channel, delivery: Delivery) -> None:
        """POST with empty body; retry 500/502/503/504 and network errors with backoff."""
        session = self._session
        if session is None:
            return
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Message-Number": str(delivery.number),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": delivery.state,
            "X-Goog-Resource-URI": channel.resource_uri,
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        if channel.expiration_ms is not None:
            expires = datetime.fromtimestamp(channel.expiration_ms / 1000, UTC)
            headers["X-Goog-Channel-Expiration"] = format_datetime(expires, usegmt=True)
        low, high = self.delivery_delay_s
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high))
        for delay in (0.0, *self.retry_delays):
            if delay:
                await asyncio.sleep(delay)
            delivery.attempts += 1
            status: int | None
            try:
                async with session.post(channel.address, data=b"", headers=headers) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            delivery.statuses.append(status)
            if status in _OK:
                delivery.outcome = "delivered"
                return
            if status is not None and status not in _RETRYABLE:
                break
        delivery.outcome = "failed"
