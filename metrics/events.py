"""Every event metric (counters and histograms), defined once on the process registry.

Invariants:
- each metric is incremented where its event happens, through this module only; gauges of
  current state are not here: they are computed at scrape time (``supervisor.metric_collectors``);
- names carry the ``integration_worker_`` prefix, counters end in ``_total``, durations are
  seconds; labels have bounded values (provider, status code, reason, actor kind), never an
  account, calendar or channel id;
- the module imports only prometheus_client: it sits at the bottom of the layers, so any
  package may import it (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

PREFIX = "integration_worker_"

# Provider syncs last from a fraction of a second (one empty delta page) to minutes (a first
# full sync of a large calendar).
SYNC_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Notifications should reach their actor within a second; minutes mean a backlog.
LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# The status label of a provider call that got no HTTP answer (timeout, connection error).
TRANSPORT_ERROR = "transport_error"

registry: CollectorRegistry = REGISTRY

actor_restarts = Counter(
    f"{PREFIX}actor_restarts_total",
    "Actor restarts after a crash or an exit, by actor kind.",
    ["kind"],
    registry=registry,
)
sync_duration = Histogram(
    f"{PREFIX}sync_duration_seconds",
    "Time to sync one calendar to its delta token, by provider and outcome (ok, error).",
    ["provider", "outcome"],
    buckets=SYNC_BUCKETS_S,
    registry=registry,
)
provider_requests = Counter(
    f"{PREFIX}provider_requests_total",
    "Provider API requests by provider and HTTP status code (transport_error: no answer).",
    ["provider", "code"],
    registry=registry,
)
provider_throttled = Counter(
    f"{PREFIX}provider_throttled_total",
    "Provider answers that asked us to slow down, as each provider documents it (429, Google's"
    " 403 rate-limit reasons, Graph's 503 with Retry-After).",
    ["provider"],
    registry=registry,
)
retry_after_clamped = Counter(
    f"{PREFIX}retry_after_clamped_total",
    "Provider Retry-After values cut to our bound, by provider and use (budget: the penalty on"
    " the shared request budget, retry: one account's retry).",
    ["provider", "use"],
    registry=registry,
)
token_refresh_failures = Counter(
    f"{PREFIX}token_refresh_failures_total",
    "Failed access-token refreshes, by provider and error kind.",
    ["provider", "kind"],
    registry=registry,
)
notifications_received = Counter(
    f"{PREFIX}notifications_received_total",
    "Webhook notifications parsed by the gateway, by provider.",
    ["provider"],
    registry=registry,
)
notifications_rejected = Counter(
    f"{PREFIX}notifications_rejected_total",
    "Webhook requests or notifications the gateway refused, by provider and reason.",
    ["provider", "reason"],
    registry=registry,
)
gateway_unavailable = Counter(
    f"{PREFIX}gateway_unavailable_total",
    "Webhook requests the gateway answered 503 (a dependency failed or timed out).",
    registry=registry,
)
api_refusals = Counter(
    f"{PREFIX}api_refusals_total",
    "Admin API requests refused for their credentials, by status (401: no or a wrong token).",
    ["status"],
    registry=registry,
)
http_connections_refused = Counter(
    f"{PREFIX}http_connections_refused_total",
    "New connections closed at once because the listener held its maximum, none of them idle.",
    ["listener"],
    registry=registry,
)
sync_items_set_aside = Counter(
    f"{PREFIX}sync_items_set_aside_total",
    "Provider items set aside by a sync while their page went on, by stage (read: not the"
    " documented shape; store: a value Postgres refused).",
    ["stage"],
    registry=registry,
)
http_connections_evicted = Counter(
    f"{PREFIX}http_connections_evicted_total",
    "Idle connections closed to admit a new one because the listener held its maximum.",
    ["listener"],
    registry=registry,
)
http_requests_shed = Counter(
    f"{PREFIX}http_requests_shed_total",
    "Requests refused before their body was read, by listener and reason (too_many_bodies:"
    " 503, the bodies in flight were at their cap; slow_body: 408, the body missed its"
    " deadline).",
    ["listener", "reason"],
    registry=registry,
)
stream_lag = Histogram(
    f"{PREFIX}stream_lag_seconds",
    "Time from the gateway receiving a notification to a replica routing it to its actor.",
    buckets=LAG_BUCKETS_S,
    registry=registry,
)
lease_renewal_failures = Counter(
    f"{PREFIX}lease_renewal_failures_total",
    "Shard lease renewal rounds that failed (Redis unreachable or too slow).",
    registry=registry,
)


def record_provider_answer(provider: str, status: int) -> None:
    """Count one provider answer."""
    provider_requests.labels(provider, str(status)).inc()


def record_provider_throttled(provider: str) -> None:
    """Count an answer the provider's client classified as throttling (by its docs)."""
    provider_throttled.labels(provider).inc()


def record_provider_transport_error(provider: str) -> None:
    """Count one provider call that got no answer."""
    provider_requests.labels(provider, TRANSPORT_ERROR).inc()


@contextlib.contextmanager
def timed_sync(provider: str) -> Iterator[None]:
    """Observe the block's duration in ``sync_duration`` (outcome ``error`` when it raises)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        sync_duration.labels(provider, outcome).observe(time.perf_counter() - started)


def lag_s(received_at: str, now: float) -> float | None:
    """Seconds from an ISO 8601 ``received_at`` to the epoch time ``now``; None if unreadable.

    A clock behind the gateway's gives a negative lag, reported as 0."""
    try:
        at = datetime.fromisoformat(received_at)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return max(0.0, now - at.timestamp())


def observe_stream_lag(received_at: bytes | str | None) -> None:
    """Observe the lag of one stream entry routed now (entries without a time are skipped)."""
    if received_at is None:
        return
    text = received_at.decode() if isinstance(received_at, bytes) else received_at
    lag = lag_s(text, time.time())
    if lag is not None:
        stream_lag.observe(lag)
