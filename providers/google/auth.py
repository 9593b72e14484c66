"""Google OAuth refresh through google-auth, run off the event loop in a bounded thread pool.

Invariants:
- google-auth is synchronous: every refresh runs in the pool, never on the loop, and the pool
  bounds how many refreshes (and token-endpoint connections) run at once;
- each pool thread has its own ``requests.Session`` (requests does not promise a session is
  safe to share between threads); sessions live until ``aclose`` and are reused meanwhile;
- no hidden retries: google-auth would retry the token POST itself (3 attempts with backoff,
  providers.md A.6) on 5xx/408/429 and ``server_error``-like answers; our transport stops it by
  raising on such an answer, so one refresh is one POST and the actor's policy decides;
- failures are ``ProviderError``s: ``invalid_grant`` is ``AuthRevoked``; messages and exception
  chains never carry token values (google-auth exceptions are not chained);
- an id_token in the answer (Google sends one when ``openid`` was granted) names the grant's
  subject only after ``providers.identity`` checked it; an unusable one is ignored, never a
  failed refresh.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.transport
import google.auth.transport.requests
import orjson
import requests
import structlog
from google.auth import exceptions as auth_exceptions
from google.oauth2.credentials import Credentials

from providers.errors import AuthRevoked, Permanent, ProviderError, Throttled, Transient
from providers.google import CAPABILITIES
from providers.http import MAX_TOKEN_ANSWER_BYTES, parse_retry_after, read_requests_capped
from providers.identity import IdentityError, jwt_claims, stable_subject
from providers.models import TokenGrant

PROVIDER = "google"
log = structlog.get_logger("providers.google.auth")

# Used only if the token endpoint omits expires_in (Google always sends it). Too long is
# harmless: a refused token is a 401, which makes the actor refresh.
DEFAULT_TOKEN_LIFETIME = timedelta(minutes=30)

# OAuth error codes that mean the grant itself is dead: the user must connect again.
# (Google's reauth-required answer is also invalid_grant, with an error_subtype.)
_REVOKED_ERRORS = frozenset({"invalid_grant"})


# Answers google-auth would retry by itself (google/oauth2/_client.py); we end the call instead.
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})


class _RetryableAnswer(Exception):
    """Raised by the transport on a retryable answer, so google-auth's retry loop never runs."""


class _RecordingTransport(google.auth.transport.Request):
    """One refresh's transport: the thread's requests transport plus a timeout and a record
    of the last answer's status, OAuth error code, Retry-After and granted scopes."""

    def __init__(self, inner: google.auth.transport.Request, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self.status: int | None = None
        self.error_code: str | None = None
        self.retry_after_s: float | None = None
        self.scopes: tuple[str, ...] = ()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        # google-auth passes no timeout on refresh (requests would then wait 120 s); ours wins.
        # Never a redirect (a 307 would re-post the client secret to the host it names), and
        # the body read capped.
        del timeout
        kwargs |= {"allow_redirects": False, "stream": True}
        response: google.auth.transport.Response = self._inner(
            url, method=method, body=body, headers=headers, timeout=self._timeout_s, **kwargs
        )
        raw = getattr(response, "_response", None)  # google-auth's requests adapter
        if isinstance(raw, requests.Response):
            try:
                read_requests_capped(raw, MAX_TOKEN_ANSWER_BYTES)
            except requests.RequestException as exc:
                error = type(exc).__name__
                raise auth_exceptions.TransportError(error) from None  # type: ignore[no-untyped-call]
        self.status = int(response.status)
        self.retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        self._record_body(response.data)
        if self.status in _RETRYABLE_STATUSES or self.error_code in _RETRYABLE_ERRORS:
            raise _RetryableAnswer
        return response

    def _record_body(self, data: object) -> None:
        # Only the two non-secret fields are kept; the access token stays in google-auth.
        self.error_code = None
        try:
            parsed = orjson.loads(data) if isinstance(data, bytes | str) else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(parsed, dict):
            return
        error = parsed.get("error")
        self.error_code = error if isinstance(error, str) else None
        scope = parsed.get("scope")
        if isinstance(scope, str):
            self.scopes = tuple(scope.split())


class GoogleTokenRefresher:
    """Refreshes Google access tokens with google-auth in a bounded pool of threads."""

    def __init__(
        self,
        *,
        token_uri: str,
        client_id: str,
        client_secret: str,
        executor: ThreadPoolExecutor | None = None,
        max_threads: int = 4,
        timeout_s: float = 10.0,
    ) -> None:
        self._token_uri = token_uri
        self._client_id = client_id
        self._client_secret = client_secret
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="google-auth"
        )
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._transports: list[google.auth.transport.requests.Request] = []
        self._transports_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GoogleTokenRefresher(token_uri={self._token_uri!r})"

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """A new access token for ``refresh_token``; ``AuthRevoked`` if the grant is dead."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self._refresh_blocking, refresh_token)
        try:
            pending = loop.run_in_executor(self._executor, call)
        except RuntimeError:  # the pool was shut down: the replica is stopping
            raise Transient("Google token refresh unavailable", provider=PROVIDER) from None
        return await pending

    async def aclose(self) -> None:
        """Shut down the pool we own (waiting for running refreshes) and close every session."""
        if self._owns_executor:
            # shutdown(wait=True) blocks until running refreshes end: keep it off the loop.
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        with self._transports_lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.session.close()

    def _thread_transport(self) -> google.auth.transport.requests.Request:
        transport: google.auth.transport.requests.Request | None = getattr(
            self._local, "transport", None
        )
        if transport is None:
            transport = google.auth.transport.requests.Request()  # a new requests.Session
            self._local.transport = transport
            with self._transports_lock:
                self._transports.append(transport)
        return transport

    def _refresh_blocking(self, refresh_token: str) -> TokenGrant:
        credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=refresh_token,
            token_uri=self._token_uri,
            client_id=self._client_id,
            client_secret=self._client_secret,
        )
        transport = _RecordingTransport(self._thread_transport(), self._timeout_s)
        try:
            credentials.refresh(transport)  # type: ignore[no-untyped-call]
        except _RetryableAnswer:
            raise _refresh_failure(transport, retryable=True) from None
        except auth_exceptions.RefreshError as exc:
            raise _refresh_failure(transport, retryable=exc.retryable) from None
        except auth_exceptions.TransportError as exc:
            cause = type(exc.__cause__ or exc).__name__
            raise Transient(f"Google token refresh failed: {cause}", provider=PROVIDER) from None
        except auth_exceptions.GoogleAuthError:
            raise Permanent("Google token refresh failed", provider=PROVIDER) from None
        except (ValueError, TypeError, KeyError):  # google-auth choking on a malformed answer
            raise Transient(
                "Google token endpoint answered malformed", provider=PROVIDER, status=200
            ) from None
        return _grant(credentials, transport, refresh_token, self._subject(credentials))

    def _subject(self, credentials: Credentials) -> str | None:
        """The stable subject the answer's id_token names, checked; None without a usable one."""
        token = credentials.id_token
        if not isinstance(token, str) or not token:
            return None
        try:
            claims = jwt_claims(token)
            return stable_subject(
                claims,
                CAPABILITIES.identity,
                client_id=self._client_id,
                issuers=CAPABILITIES.identity.issuers,
                now=time.time(),
            )
        except IdentityError as exc:
            log.warning("refresh id_token not usable", provider=PROVIDER, reason=str(exc))
            return None


def _grant(
    credentials: Credentials,
    transport: _RecordingTransport,
    old_refresh_token: str,
    subject: str | None,
) -> TokenGrant:
    token = credentials.token
    if not isinstance(token, str) or not token:
        raise Transient("Google token endpoint returned no access token", provider=PROVIDER)
    expiry = credentials.expiry  # naive UTC in google-auth
    expires_at = (
        datetime.now(UTC) + DEFAULT_TOKEN_LIFETIME if expiry is None else expiry.replace(tzinfo=UTC)
    )
    new_refresh_token = credentials.refresh_token
    return TokenGrant(
        access_token=token,
        expires_at=expires_at,
        refresh_token=new_refresh_token if new_refresh_token != old_refresh_token else None,
        scopes=transport.scopes,
        subject=subject,
    )


def _refresh_failure(transport: _RecordingTransport, *, retryable: bool) -> ProviderError:
    """The taxonomy error for a failed refresh (from the recorded answer, not exc's text)."""
    status, code = transport.status, transport.error_code
    message = "Google token refresh failed" + ("" if status is None else f": HTTP {status}")
    common: dict[str, Any] = {"provider": PROVIDER, "status": status, "reason": code}
    if code in _REVOKED_ERRORS:
        return AuthRevoked(message, **common)
    if status == 429:
        return Throttled(message, retry_after_s=transport.retry_after_s, **common)
    if retryable or status == 408 or (status is not None and status >= 500):
        return Transient(message, retry_after_s=transport.retry_after_s, **common)
    if status is not None and 200 <= status < 300:
        # A 200 that google-auth rejected (no access_token, ...): a malformed answer.
        return Transient("Google token endpoint answered malformed", **common)
    # invalid_client, unauthorized_client, missing configuration (no request made), ...
    return Permanent(message, **common)
