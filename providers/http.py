"""The HTTP edge every provider client shares: one aiohttp session per replica, no retries.

Invariants:
- one ``ClientSession`` per replica with per-host connection limits; every call has a timeout;
- transport failures (connection errors, timeouts, unreadable bodies) become ``Transient``;
  HTTP statuses are returned as they are: mapping them is each provider's job;
- nothing here retries: the actor owns retry policy;
- redirects are never followed (a 307 would re-send the request, credentials included, to
  whatever host it names): a 3xx is returned as it is; an answer body larger than
  ``MAX_ANSWER_BYTES`` is not read (``Transient``), so a hostile or broken endpoint cannot
  make a replica hold gigabytes;
- every call is counted here (``metrics.events``): by status code, throttles, no answer.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import requests
from yarl import URL

from metrics import events as metrics
from providers.errors import Transient
from providers.text import parse_provider_json


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Connection limits and timeouts for provider calls."""

    total_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    limit: int = 200
    limit_per_host: int = 32
    ca_bundle: Path | None = None  # extra CAs to trust on top of the system's (test servers)


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The system's trust store, plus ``ca_bundle``'s certificates when given."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def create_session(settings: HttpSettings | None = None) -> aiohttp.ClientSession:
    """The replica's one session for provider calls (close it at shutdown)."""
    settings = settings or HttpSettings()
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=settings.limit,
            limit_per_host=settings.limit_per_host,
            ssl=ssl_context(settings.ca_bundle),
        ),
        timeout=aiohttp.ClientTimeout(
            total=settings.total_timeout_s, sock_connect=settings.connect_timeout_s
        ),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        raise_for_status=False,
    )


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response: status, headers (case-insensitive lookups) and body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON with storable strings (``providers.text``); ValueError if
        it is not JSON."""
        return parse_provider_json(self.body) if self.body else None


MAX_ANSWER_BYTES = 32 * 1024 * 1024  # a Graph or Google page of events is a few MiB at most
_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):
    """An answer's body exceeded the cap it was read with."""


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body of ``response``, or ``AnswerTooLarge`` past ``cap`` bytes (checked
    against Content-Length first, then while reading)."""
    if response.content_length is not None and response.content_length > cap:
        raise AnswerTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > cap:
            raise AnswerTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


MAX_TOKEN_ANSWER_BYTES = 1024 * 1024  # a token answer or a discovery document is a few KiB


def read_requests_capped(response: requests.Response, cap: int) -> None:
    """Read a streamed ``requests`` answer's body into it, at most ``cap`` bytes (else a
    ``requests.ConnectionError``: a transport failure), so its ``content`` is served from
    memory (the token refreshers' libraries use requests). A body something read already (a
    library's DEBUG logging) is only measured."""
    consumed: object = response._content  # requests' False means "not read yet"
    if consumed is not False:
        if len(response.content) > cap:
            raise requests.ConnectionError("answer too large")
        return
    try:
        body = response.raw.read(cap + 1, decode_content=True)
    finally:
        response.close()
    if len(body) > cap:
        raise requests.ConnectionError("answer too large")
    response._content = body


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    json_body: Any = None,
    form: Mapping[str, str] | None = None,
) -> HttpResponse:
    """Make one request and read the whole body; transport failures raise Transient.

    Pass ``URL(link, encoded=True)`` for opaque links (Graph's nextLink) that must go out byte
    for byte; aiohttp re-encodes a plain string."""
    data = None if json_body is None else orjson.dumps(json_body)
    request_headers = dict(headers or {})
    if data is not None:
        request_headers.setdefault("Content-Type", "application/json")
    try:
        async with session.request(
            method,
            url,
            headers=request_headers,
            params=params,
            data=data if form is None else form,
            allow_redirects=False,
        ) as response:
            body = await read_capped(response, MAX_ANSWER_BYTES)
            metrics.record_provider_answer(provider, response.status)
            return HttpResponse(response.status, response.headers, body)
    except TimeoutError as exc:
        metrics.record_provider_transport_error(provider)
        raise Transient(f"{method} timed out", provider=provider) from exc
    except AnswerTooLarge:
        metrics.record_provider_transport_error(provider)
        raise Transient(
            f"{method} answer larger than {MAX_ANSWER_BYTES} bytes", provider=provider
        ) from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        metrics.record_provider_transport_error(provider)
        # The exception text may hold the URL with query parameters; keep only its type.
        raise Transient(f"{method} failed: {type(exc).__name__}", provider=provider) from None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # delta-seconds; Graph sends fractions such as "2.128"
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
