"""The webhook gateway's aiohttp application: verify provider notifications, append them to
their shard's Redis Stream, answer. It never syncs inline and holds no state but counters.

Invariants:
- a 2xx answer to a notification is sent only after every verified entry of the request was
  appended (XADD returned), so a notification the provider considers delivered is in Redis;
- a failing dependency (Postgres, Redis, the ``timeout_s`` deadline) or any unexpected error is
  answered 503 (providers retry 5xx), never 500, and no answer carries error details;
- tokens, clientStates and validation tokens are never logged, and query strings are not either;
- statuses (docs/streams.md): Google 202 appended, 200 verified sync (not appended), 400
  malformed, 403 bad token or resource id, 404 unknown channel, 410 expired channel, 413 body too
  large; Graph 200 handshake, 202 when at least one item was appended or none was rejected,
  403 when every item was rejected, 400, 413, 415 for a non-JSON content type;
- it serves only ``/webhooks/``: the probes and the metrics are on the ops port
  (``gateway.ops``), which never faces the internet.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.streams import Outcome, StreamEntry, append_notifications, entry_for
from gateway.limits import (
    DEFAULT_MAX_BODY_BYTES,
    BodyBudget,
    BodyTooLarge,
    BodyTooSlow,
    TooManyBodies,
)
from gateway.verify import Rejection, plausible_id, verify
from metrics import events as metrics
from providers.errors import InvalidNotification
from providers.google import notifications as google
from providers.microsoft import notifications as microsoft
from providers.models import NotificationKind
from store.channels import get_channel, get_channels
from store.db import Queryable

log = structlog.get_logger("gateway")

GOOGLE_PATH = "/webhooks/google"
MICROSOFT_PATH = "/webhooks/microsoft"
MICROSOFT_LIFECYCLE_PATH = "/webhooks/microsoft/lifecycle"
MAX_VALIDATION_TOKEN_CHARS = 2048  # Graph's opaque tokens are a few hundred characters
DEFAULT_TIMEOUT_S = 2.0  # under Graph's 3 s delivery budget, so a slow Redis is a 503, not slow

# Google treats any status but 2xx/5xx as a failed message and does not retry it.
_GOOGLE_STATUS = {
    Rejection.UNKNOWN_CHANNEL: 404,
    Rejection.BAD_TOKEN: 403,
    Rejection.RESOURCE_MISMATCH: 403,
    Rejection.EXPIRED: 410,
}
# What a dependency failure looks like; anything else is a bug and is logged with a traceback.
_DEPENDENCY_ERRORS = (RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(slots=True)
class GatewayStatistics:
    """In-process counters of one gateway; ``rejected`` is keyed by ``Rejection`` value."""

    requests: int = 0  # webhook requests, handshakes included
    handshakes: int = 0  # Graph validation requests answered
    received: int = 0  # notifications parsed from well-formed requests
    appended: int = 0  # stream entries written
    acknowledged: int = 0  # verified Google sync messages (answered, not appended)
    unavailable: int = 0  # requests answered 503
    client_gone: int = 0  # requests whose sender hung up before the answer (not an outage)
    coalesced: int = 0  # verified notifications folded into their channel's unread entry
    replayed: int = 0  # verified Google messages whose number was not above the last one
    # Requests refused before their body was read: too_many_bodies (503), slow_body (408).
    shed: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: Rejection, count: int = 1) -> None:
        """Count ``count`` notifications or requests refused for ``reason``."""
        self.rejected[reason.value] += count


STATS = web.AppKey("gateway_statistics", GatewayStatistics)
BODIES = web.AppKey("gateway_bodies", BodyBudget)  # the bodies being read now


def _now() -> datetime:
    return datetime.now(UTC)


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


class _Gateway:
    """The handlers, bound to one pool, one Redis client and one set of counters."""

    def __init__(
        self,
        pool: Queryable,
        redis: Redis,
        stats: GatewayStatistics,
        *,
        max_body_bytes: int,
        timeout_s: float,
        clock: Callable[[], datetime],
        body_deadline_s: float,
        bodies: BodyBudget,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._stats = stats
        self._max_body_bytes = max_body_bytes
        self._timeout_s = timeout_s
        self._clock = clock
        self._body_deadline_s = body_deadline_s
        self.bodies = bodies

    async def _read(self, request: web.Request) -> bytes:
        """The request's body, within its size, its deadline and the bodies in flight."""
        return await self.bodies.read(request, self._max_body_bytes, self._body_deadline_s)

    def _shed(self, reason: str, status: int) -> web.Response:
        """Refuse a request before its body was read, and close its connection: 503 when too
        many bodies are being read (providers retry), 408 when the body came too slowly."""
        self._stats.shed[reason] += 1
        metrics.http_requests_shed.labels("gateway", reason).inc()
        return web.Response(status=status, headers={"Connection": "close"})

    def _refuse(self, provider: str, reason: Rejection, status: int) -> web.Response:
        self._stats.reject(reason)
        metrics.notifications_rejected.labels(provider, reason.value).inc()
        log.info("request refused", provider=provider, reason=reason.value, status=status)
        return _empty(status)

    def _drop(self, provider: str, reason: Rejection) -> None:
        """Count one refused notification (the request logs one line for all of its own)."""
        self._stats.reject(reason)
        metrics.notifications_rejected.labels(provider, reason.value).inc()

    async def _append(self, entries: list[StreamEntry]) -> None:
        outcomes = await append_notifications(self._redis, entries)
        for entry, (outcome, entry_id) in zip(entries, outcomes, strict=True):
            if outcome is Outcome.COALESCED:
                self._stats.coalesced += 1  # its channel's unread entry covers it
                continue
            if outcome is Outcome.REPLAYED:
                self._stats.replayed += 1
                continue
            self._stats.appended += 1
            log.debug(
                "notification appended",
                stream=entry.key,
                entry_id=entry_id,
                account_id=entry.fields["account_id"],
                calendar_id=entry.fields["calendar_id"],
                kind=entry.fields["kind"],
            )

    async def google(self, request: web.Request) -> web.Response:
        """``POST /webhooks/google``: one push notification in the ``X-Goog-*`` headers."""
        try:
            body = await self._read(request)
            (notification,) = google.parse_notifications(request.headers, body)
        except BodyTooLarge:
            return self._refuse("google", Rejection.TOO_LARGE, 413)
        except TooManyBodies:
            return self._shed("too_many_bodies", 503)
        except BodyTooSlow:
            return self._shed("slow_body", 408)
        except InvalidNotification:
            return self._refuse("google", Rejection.MALFORMED, 400)
        self._stats.received += 1
        metrics.notifications_received.labels("google").inc()
        received_at = self._clock()
        async with asyncio.timeout(self._timeout_s):
            channel = None
            if plausible_id(notification.channel_id):
                channel = await get_channel(self._pool, "google", notification.channel_id)
            rejection = verify(notification, channel, received_at, check_resource=True)
            if channel is None and notification.kind is NotificationKind.SYNC:
                # Google sends the sync message as soon as events.watch creates the channel,
                # before the actor has committed its row. Nothing is appended for it, so
                # acknowledging it unverified costs nothing and keeps the channel healthy.
                self._stats.acknowledged += 1
                return _empty(200)
            if rejection is not None or channel is None:
                reason = rejection or Rejection.UNKNOWN_CHANNEL
                self._drop("google", reason)
                # An implausible id is attacker-chosen text; only a well-formed one is logged.
                channel_id = notification.channel_id
                log.info(
                    "notification rejected",
                    provider="google",
                    reason=reason.value,
                    channel_id=channel_id if plausible_id(channel_id) else None,
                )
                return _empty(_GOOGLE_STATUS[reason])
            if notification.kind is NotificationKind.SYNC:
                # The channel is live and nothing changed: the actor has nothing to do.
                self._stats.acknowledged += 1
                return _empty(200)
            await self._append([entry_for(channel, notification, received_at)])
        return _empty(202)

    async def microsoft(self, request: web.Request) -> web.Response:
        """``POST /webhooks/microsoft[/lifecycle]``: the handshake, or a batch of notifications."""
        token = microsoft.validation_token(request.query)
        if token is not None:
            # No database or Redis here: Graph gives the handshake 10 seconds. The echo is
            # bounded and never sniffed as markup (it is whatever the sender wrote).
            if len(token) > MAX_VALIDATION_TOKEN_CHARS:
                return self._refuse("microsoft", Rejection.MALFORMED, 400)
            self._stats.handshakes += 1
            return web.Response(
                text=token,
                content_type="text/plain",
                headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
            )
        if request.content_type != "application/json":
            return self._refuse("microsoft", Rejection.UNSUPPORTED_MEDIA_TYPE, 415)
        try:
            body = await self._read(request)
            notifications = microsoft.parse_notifications(request.headers, body)
        except BodyTooLarge:
            return self._refuse("microsoft", Rejection.TOO_LARGE, 413)
        except TooManyBodies:
            return self._shed("too_many_bodies", 503)
        except BodyTooSlow:
            return self._shed("slow_body", 408)
        except InvalidNotification:
            return self._refuse("microsoft", Rejection.MALFORMED, 400)
        self._stats.received += len(notifications)
        metrics.notifications_received.labels("microsoft").inc(len(notifications))
        received_at = self._clock()
        entries: list[StreamEntry] = []
        refused: Counter[str] = Counter()
        seen: set[tuple[str, NotificationKind]] = set()
        async with asyncio.timeout(self._timeout_s):
            ids = [n.channel_id for n in notifications if plausible_id(n.channel_id)]
            channels = await get_channels(self._pool, "microsoft", ids) if ids else {}
            for notification in notifications:
                channel = channels.get(notification.channel_id)
                rejection = verify(notification, channel, received_at)
                if rejection is not None or channel is None:
                    reason = rejection or Rejection.UNKNOWN_CHANNEL
                    self._drop("microsoft", reason)
                    refused[reason.value] += 1
                    continue
                # One entry per subscription and kind: the sync it asks for covers every
                # repeat in the batch (a replayed item repeated thousands of times is one).
                key = (channel.id, notification.kind)
                if key in seen:
                    self._stats.coalesced += 1
                    continue
                seen.add(key)
                entries.append(entry_for(channel, notification, received_at))
            await self._append(entries)
        if refused:  # one line per request, whatever the batch held
            log.info(
                "notifications rejected",
                provider="microsoft",
                # Pairs, not a mapping: a reason such as bad_token would read as a secret key.
                reasons=sorted(refused.items()),
                items=len(notifications),
            )
        # A batch that proved nothing genuine is refused; an empty one has nothing to refuse.
        return _empty(403 if notifications and not entries else 202)


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed or closing (it cannot read an answer)."""
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count webhook requests, log each without its query, and turn any failure into a 503."""
    stats = request.app[STATS]
    webhook = request.path.startswith("/webhooks/")
    if webhook:
        stats.requests += 1
    started = time.perf_counter()
    status = 503
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # the router's 404/405: no details, no traceback
        status = exc.status
        raise
    except asyncio.CancelledError:
        if client_gone(request):  # aiohttp cancels the handler of a sender that hung up
            status = 400
            stats.client_gone += 1
        raise
    except (TimeoutError, *_DEPENDENCY_ERRORS) as exc:
        if client_gone(request):
            # The sender hung up mid-request (its own timeout, a reset): not an outage of ours.
            status = 400
            stats.client_gone += 1
            log.info("client went away", path=request.path, error=type(exc).__name__)
            return _empty(400)
        stats.unavailable += 1
        metrics.gateway_unavailable.inc()
        log.warning("dependency unavailable", path=request.path, error=type(exc).__name__)
        return _empty(503)
    except Exception:
        stats.unavailable += 1
        metrics.gateway_unavailable.inc()
        log.exception("unexpected error", path=request.path)
        return _empty(503)
    finally:
        log.debug(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def create_app(
    pool: Queryable,
    redis: Redis,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    clock: Callable[[], datetime] = _now,
    body_deadline_s: float = 10.0,
    max_bodies_in_flight: int = 64,
) -> web.Application:
    """The gateway application on an open pool and Redis client (the caller closes both)."""
    if max_body_bytes < 0:
        raise ValueError("max_body_bytes must be >= 0")
    stats = GatewayStatistics()
    gateway = _Gateway(
        pool,
        redis,
        stats,
        max_body_bytes=max_body_bytes,
        timeout_s=timeout_s,
        clock=clock,
        body_deadline_s=body_deadline_s,
        bodies=BodyBudget(max_bodies_in_flight),
    )
    # client_max_size also caps request.read()/post(), which no handler here uses.
    app = web.Application(middlewares=[_guard], client_max_size=max(max_body_bytes, 1))
    app[STATS] = stats
    app[BODIES] = gateway.bodies
    app.router.add_post(GOOGLE_PATH, gateway.google)
    app.router.add_post(MICROSOFT_PATH, gateway.microsoft)
    app.router.add_post(MICROSOFT_LIFECYCLE_PATH, gateway.microsoft)
    return app
