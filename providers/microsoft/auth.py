"""Microsoft token refresh through msal's ``ConfidentialClientApplication``, off the loop.

Invariants:
- one msal application per refresher (one per authority per replica): its constructor does
  OpenID discovery over the network (providers.md B.4), so it is built lazily, in the pool,
  once; a failed build is not kept, the next refresh tries again;
- no token is ever served from a cache: the application's token cache stores nothing (one
  application serves every account, so a shared cache could hand one account's tokens to
  another), and its http_cache never keeps token-endpoint answers, so msal's 60 s replay of
  a 400 (and its 429/5xx replay) cannot answer a retry after the user re-authorized;
- every refresh runs in a bounded thread pool over per-thread ``requests.Session``s with
  ``trust_env=False`` (``REQUESTS_CA_BUNDLE`` would override ``verify``, B.4), ``verify`` =
  the configured CA bundle (or the system's), and a timeout on every call; one refresh is
  one POST (no adapter retries, no msal replays);
- failures are ``ProviderError``s mapped from the OAuth ``error`` code and the recorded HTTP
  status; messages carry codes and statuses, never tokens or the endpoint's description, and
  a non-JSON answer is refused before msal could log its body;
- the grant's subject (``tid``:``oid``) comes from the answer's id_token, checked by
  ``providers.identity`` against the authority's per-tenant issuer, else from its
  ``client_info`` (``uid`` is the object id, ``utid`` the tenant); never a failed refresh.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import orjson
import requests
import structlog

from providers.errors import AuthRevoked, Permanent, ProviderError, Throttled, Transient
from providers.http import MAX_TOKEN_ANSWER_BYTES, parse_retry_after, read_requests_capped
from providers.identity import IdentityError, jwt_claims, stable_subject, tenant_issuer
from providers.microsoft import CAPABILITIES
from providers.models import TokenGrant

PROVIDER = "microsoft"
log = structlog.get_logger("providers.microsoft.auth")

# msal's own default when the token endpoint omits expires_in (providers.md B.4).
DEFAULT_TOKEN_LIFETIME = timedelta(seconds=600)

# msal adds these itself and refuses them from callers (ValueError).
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})

# The grant is dead until the user signs in again: revoked or expired refresh token, new MFA
# or Conditional Access policy (invalid_grant with AADSTS50076 etc.), consent withdrawn.
REVOKED_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


class _RefusedAnswer(Exception):
    """Raised inside msal's call on an answer we map ourselves (5xx, 429, not JSON)."""


class _Answer(threading.local):
    """The current thread's last token-endpoint answer: status, Retry-After, JSON-ness."""

    status: int | None = None
    retry_after_s: float | None = None
    malformed: bool = False

    def reset(self) -> None:
        self.status, self.retry_after_s, self.malformed = None, None, False


class _TokenAnswersNotCached(dict[str, Any]):
    """An msal ``http_cache`` keeping discovery GETs but never a token-endpoint POST answer.

    msal's ``_ExpiringMapping`` indexes the key, then reads ``mapping[key]``: a POST key we
    never stored raises KeyError there, which msal treats as a miss and calls the endpoint.
    """

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(key, str) and key.startswith("POST "):
            return
        super().__setitem__(key, value)


class _ThreadSessions:
    """msal's ``http_client``: a ``requests.Session`` per pool thread, trusting only ``verify``,
    with our timeout on every call and a per-thread record of the last POST's answer."""

    def __init__(self, verify: str | bool, timeout_s: float, answer: _Answer) -> None:
        self._verify = verify
        self._timeout_s = timeout_s
        self._answer = answer
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._closed = False

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE/proxies from the env must not win
            session.verify = self._verify
            with self._lock:
                if self._closed:
                    session.close()
                    raise requests.ConnectionError("token refresh sessions are closed")
                self._sessions.append(session)
            self._local.session = session
        return session

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        response = self._session().post(url, **self._bounded(kwargs))
        read_requests_capped(response, MAX_TOKEN_ANSWER_BYTES)
        self._answer.status = response.status_code
        self._answer.retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        if response.status_code == 429 or response.status_code >= 500:
            raise _RefusedAnswer
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            # msal would log the unparsable body (it may hold a token fragment): stop here.
            self._answer.malformed = True
            raise _RefusedAnswer
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        response = self._session().get(url, **self._bounded(kwargs))
        read_requests_capped(response, MAX_TOKEN_ANSWER_BYTES)
        return response

    def _bounded(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Our timeout; never a redirect (a 307 would re-post the client secret to the host
        it names); the body read by ``read_requests_capped``."""
        return kwargs | {"timeout": self._timeout_s, "allow_redirects": False, "stream": True}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            _close_pools(session)
            session.close()


def _close_pools(session: requests.Session) -> None:
    # urllib3 2.x no longer closes pools when a PoolManager is cleared (Session.close): their
    # sockets would linger until garbage collection. Close them now.
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        pools = getattr(manager, "pools", None)
        if pools is None:
            continue
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()


class _NullTokenCache(msal.TokenCache):  # type: ignore[misc]
    """A token cache that stores nothing: tokens go back to the caller, never into msal."""

    def add(self, event: Any, **kwargs: Any) -> None:
        del event, kwargs

    def modify(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs


def msal_scopes(scopes: Sequence[str]) -> list[str]:
    """The configured scopes minus those msal adds itself (and refuses from callers)."""
    kept = [scope for scope in scopes if scope.lower() not in RESERVED_SCOPES]
    if not kept:
        raise ValueError("at least one Graph scope is required")
    return kept


class MicrosoftTokenRefresher:
    """Refreshes Microsoft access tokens with msal in a bounded pool of threads."""

    def __init__(
        self,
        *,
        authority: str,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str],
        ca_bundle: Path | None = None,
        executor: ThreadPoolExecutor | None = None,
        max_threads: int = 4,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if urlsplit(authority).scheme != "https":
            raise ValueError("the Microsoft authority must be an https URL")  # msal insists
        self._authority = authority
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = msal_scopes(scopes)
        self._answer = _Answer()
        self._http = _ThreadSessions(
            str(ca_bundle) if ca_bundle is not None else True, timeout_s, self._answer
        )
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="msal"
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._app: Any = None
        self._app_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MicrosoftTokenRefresher(authority={self._authority!r})"

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """A new access token (and the rotated refresh token); ``AuthRevoked`` if the grant
        is dead."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self._refresh_blocking, refresh_token)
        try:
            pending = loop.run_in_executor(self._executor, call)
        except RuntimeError:  # the pool was shut down: the replica is stopping
            raise Transient("Microsoft token refresh unavailable", provider=PROVIDER) from None
        return await pending

    async def aclose(self) -> None:
        """Shut down the pool we own (waiting for running refreshes) and close the sessions."""
        if self._owns_executor:
            # shutdown(wait=True) blocks until running refreshes end: keep it off the loop.
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._http.close()

    def _application(self) -> Any:
        """The one msal application, built on first use (OpenID discovery happens here)."""
        with self._app_lock:
            if self._app is None:
                try:
                    self._app = msal.ConfidentialClientApplication(
                        self._client_id,
                        client_credential=self._client_secret,
                        authority=self._authority,
                        # Instance discovery asks login.microsoftonline.com whether the host
                        # is a Microsoft cloud; the authority is our own configuration (a
                        # sovereign cloud or a test server), so trust it as given and go
                        # straight to its OpenID configuration. Well-known hosts skip it
                        # anyway, so this changes nothing for them.
                        instance_discovery=False,
                        validate_authority=True,
                        token_cache=_NullTokenCache(),
                        http_client=self._http,
                        http_cache=_TokenAnswersNotCached(),
                        # No region detection or MSAL_FORCE_REGION: the authority is exact.
                        azure_region=msal.ConfidentialClientApplication.DISABLE_MSAL_FORCE_REGION,
                    )
                except _RefusedAnswer:
                    raise Transient(
                        "Microsoft authority discovery failed", provider=PROVIDER
                    ) from None
                except requests.RequestException as exc:
                    raise Transient(
                        f"Microsoft authority discovery failed: {type(exc).__name__}",
                        provider=PROVIDER,
                    ) from None
                except (ValueError, KeyError):
                    # A 4xx or incomplete openid-configuration: the authority may be down or
                    # mid-deploy; the actor's backoff retries, and the message says what.
                    raise Transient(
                        "Microsoft authority discovery answered unusably", provider=PROVIDER
                    ) from None
            return self._app

    def _refresh_blocking(self, refresh_token: str) -> TokenGrant:
        app = self._application()
        self._answer.reset()
        try:
            result = app.acquire_token_by_refresh_token(refresh_token, scopes=self._scopes)
        except _RefusedAnswer:
            raise self._failure({}) from None
        except requests.RequestException as exc:
            raise Transient(
                f"Microsoft token refresh failed: {type(exc).__name__}", provider=PROVIDER
            ) from None
        except (ValueError, TypeError, KeyError):  # msal choking on an unexpected answer
            raise Transient(
                "Microsoft token endpoint answered malformed", provider=PROVIDER
            ) from None
        if not isinstance(result, Mapping):
            raise Transient("Microsoft token endpoint answered malformed", provider=PROVIDER)
        if "error" in result or "access_token" not in result:
            raise self._failure(result)
        return _grant(result, refresh_token, self._clock(), self._subject(result))

    def _subject(self, result: Mapping[str, Any]) -> str | None:
        """The stable subject the answer names (its id_token, else its client_info)."""
        token = result.get("id_token")
        if isinstance(token, str) and token:
            try:
                claims = jwt_claims(token)
                origin = "{0.scheme}://{0.netloc}".format(urlsplit(self._authority))
                return stable_subject(
                    claims,
                    CAPABILITIES.identity,
                    client_id=self._client_id,
                    issuers=(tenant_issuer(f"{origin}/{{tenantid}}/v2.0", claims),),
                    now=self._clock().timestamp(),
                )
            except IdentityError as exc:
                log.warning("refresh id_token not usable", provider=PROVIDER, reason=str(exc))
        return client_info_subject(result.get("client_info"))

    def _failure(self, result: Mapping[str, Any]) -> ProviderError:
        """The taxonomy error for a failed refresh, from the OAuth code and the HTTP status."""
        answer = self._answer
        error = result.get("error")
        code = error if isinstance(error, str) else None
        status, retry_after_s = answer.status, answer.retry_after_s
        message = "Microsoft token refresh failed" + ("" if status is None else f": HTTP {status}")
        common: dict[str, Any] = {"provider": PROVIDER, "status": status, "reason": code}
        if answer.malformed or (code is None and status is not None and status < 400):
            return Transient("Microsoft token endpoint answered malformed", **common)
        if code in REVOKED_ERRORS:
            return AuthRevoked(message, **common)
        if status == 429:
            return Throttled(message, retry_after_s=retry_after_s, **common)
        if code in TRANSIENT_ERRORS or status is None or status == 408 or status >= 500:
            return Transient(message, retry_after_s=retry_after_s, **common)
        # invalid_client, unauthorized_client, invalid_scope, unsupported_grant_type, ...
        return Permanent(message, **common)


def client_info_subject(client_info: object) -> str | None:
    """``tid:oid`` from Entra's ``client_info`` (base64url JSON ``{"uid", "utid"}``)."""
    if not isinstance(client_info, str) or not client_info:
        return None
    try:
        info = orjson.loads(base64.urlsafe_b64decode(client_info + "=" * (-len(client_info) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(info, dict):
        return None
    uid, utid = info.get("uid"), info.get("utid")
    if isinstance(uid, str) and uid.strip() and isinstance(utid, str) and utid.strip():
        return f"{utid.strip()}:{uid.strip()}"
    return None


def _grant(
    result: Mapping[str, Any], old_refresh_token: str, now: datetime, subject: str | None
) -> TokenGrant:
    token = result.get("access_token")
    if not isinstance(token, str) or not token:
        raise Transient("Microsoft token endpoint returned no access token", provider=PROVIDER)
    expires_in = result.get("expires_in")
    try:
        lifetime = (
            DEFAULT_TOKEN_LIFETIME
            if expires_in is None
            else timedelta(seconds=int(expires_in))  # msal accepts a string, so do we
        )
    except (TypeError, ValueError):
        raise Transient(
            "Microsoft token endpoint answered malformed expires_in", provider=PROVIDER
        ) from None
    new_refresh_token = result.get("refresh_token")
    rotated = (
        new_refresh_token
        if isinstance(new_refresh_token, str)
        and new_refresh_token
        and new_refresh_token != old_refresh_token
        else None
    )
    scope = result.get("scope")
    return TokenGrant(
        access_token=token,
        expires_at=now + lifetime,
        refresh_token=rotated,
        scopes=tuple(scope.split()) if isinstance(scope, str) else (),
        subject=subject,
    )
