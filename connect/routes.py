"""The flow's two routes, ``GET /oauth/{provider}/start`` and ``GET /oauth/{provider}/callback``.

Invariants:
- nothing is routed unless ``oauth_connect_enabled`` (the routes answer 404), and a provider
  without a configured client answers 404;
- start accepts only a start token the host signed (``connect.start_token``) for this provider,
  unexpired, living at most ten minutes, and not used before (its nonce is spent in Postgres
  first): anything else is 403 and creates nothing;
- a connected account is handed back as a signed result (the account, the host's user
  reference and ``return_state``, its own nonce and a five-minute expiry), never as a bare id;
- start binds a fresh state, PKCE verifier and nonce to the browser with the signed flow
  cookie (HttpOnly, SameSite=Lax so the provider's top-level redirect carries it back, Secure
  when our public URL is https, Max-Age = ``oauth_state_max_age_s``) and redirects (302);
- callback clears that cookie whatever happens, refuses (400, JSON ``error``/``detail``) a
  missing, forged, expired or other-provider cookie or a different state before it talks to
  the provider, exchanges the code exactly once, and creates or re-activates the account
  (``add_account``: refresh token stored encrypted, status active) only after the provider
  returned a refresh token and an id_token naming the user for this flow;
- codes, tokens, verifiers and states never reach logs or answers: tokens are registered with
  the log redactor the moment they arrive, and answers name only error codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from config.redact import register_secret, register_secrets
from config.settings import Settings
from connect.cookie import COOKIE_NAME, Flow, FlowRefused, open_flow, seal_flow
from connect.endpoints import DiscoveryFailed, EndpointBook, provider_clients
from connect.exchange import ExchangeFailed, exchange_code
from connect.pkce import new_nonce, new_state, new_verifier, s256_challenge
from connect.protocol import (
    AnswerError,
    Approved,
    Denied,
    Endpoints,
    ProviderClient,
    TokenAnswer,
    authorization_url,
    identity,
    parse_callback,
    token_form,
)
from connect.start_token import StartClaims, StartRefused, open_start, seal_result
from operations.accounts import AccountOfAnotherUser, OperatorError, add_account
from store.crypto import Keyring
from store.db import PgPool
from store.oauth_nonces import spend_nonce

log = structlog.get_logger("connect")

START_PATH = "/oauth/{provider}/start"
CALLBACK_PATH = "/oauth/{provider}/callback"
# Answers of the flow are never cached, and the callback's URL (code, state) never leaves as a
# Referer to wherever the browser goes next (RFC 9700 4.2).
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_START_REFUSALS = {
    "missing": "a start token from the application is required",
    "malformed": "the start token is malformed",
    "signature": "the start token is not signed by the application",
    "type": "this is not a start token",
    "expired": "the start token expired; ask the application for a new one",
    "too_long": "the start token lives longer than ten minutes",
}
_REFUSALS = {
    "missing": "no OAuth flow was started in this browser (or its cookie expired)",
    "malformed": "the OAuth flow cookie is malformed",
    "signature": "the OAuth flow cookie is not ours",
    "provider": "the OAuth flow was started for another provider",
    "expired": "the OAuth flow took too long; start again",
    "state": "the state parameter does not match this browser's OAuth flow",
}


@dataclass
class ConnectFlow:
    """The routes' shared state: configuration, clients, endpoints and the database."""

    settings: Settings
    pool: PgPool
    keyring: Keyring
    session: aiohttp.ClientSession
    clients: dict[str, ProviderClient]
    endpoints: EndpointBook
    state_key: bytes
    start_key: bytes
    clock: Callable[[], float]

    def redirect_uri(self, provider: str) -> str:
        base = self.settings.oauth_redirect_base_url or ""
        return base + CALLBACK_PATH.format(provider=provider)

    def _cookie_path(self) -> str:
        # Only the flow's routes see the cookie, under our public base path.
        return urlsplit(self.settings.oauth_redirect_base_url or "").path.rstrip("/") + "/oauth/"

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Redirect the browser to the provider's sign-in, bound to it by the flow cookie."""
        try:
            client = self._client(request)
            begun = await self._begun(request)
            endpoints = await self._endpoints(client)
        except _Refused as refused:
            return refused.response()
        # The state comes back in the callback's URL, which access logs print: the redaction's
        # ``state=`` rule hides it there (never the process-wide registry, which clients must
        # not be able to write to).
        flow = Flow(
            client.provider,
            new_state(),
            new_verifier(),
            new_nonce(),
            self.clock(),
            user_ref=begun.user_ref,
            return_state=begun.return_state,
        )
        location = authorization_url(
            client,
            endpoints.authorization_endpoint,
            redirect_uri=self.redirect_uri(client.provider),
            state=flow.state,
            challenge=s256_challenge(flow.verifier),
            nonce=flow.nonce,
        )
        response = _redirect(location)
        response.set_cookie(
            COOKIE_NAME,
            seal_flow(self.state_key, flow),
            max_age=int(self.settings.oauth_state_max_age_s),
            path=self._cookie_path(),
            httponly=True,
            samesite="Lax",
            secure=urlsplit(self.settings.oauth_redirect_base_url or "").scheme == "https",
        )
        log.info("oauth connect: flow started", provider=client.provider)
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """Check the flow, exchange the code, create the account; the cookie is spent."""
        try:
            client = self._client(request)
            flow = self._flow(request, client)
            outcome = parse_callback(request.query)
            if isinstance(outcome, Approved):
                # Only now, with the flow's cookie verified, and only a code-shaped value (a
                # learned secret must be token-shaped): clients cannot write to the registry.
                register_secret(outcome.code)
            if isinstance(outcome, Denied):
                log.info(
                    "oauth connect: not authorized", provider=flow.provider, error=outcome.error
                )
                raise _Refused(
                    400, "authorization_failed", "the provider did not authorize", outcome.error
                )
            answer = await self._tokens(client, flow, outcome.code)
            account_id, email = await self._store(client, flow, answer)
        except _Refused as refused:
            response = refused.response()
        else:
            response = self._connected(flow, account_id, email)
        response.del_cookie(COOKIE_NAME, path=self._cookie_path())
        return response

    def _client(self, request: web.Request) -> ProviderClient:
        client = self.clients.get(request.match_info["provider"])
        if client is None:
            raise _Refused(404, "unknown_provider", "no OAuth client is configured for it")
        return client

    async def _endpoints(self, client: ProviderClient) -> Endpoints:
        try:
            return await self.endpoints.endpoints(client.provider)
        except DiscoveryFailed as exc:
            log.warning("oauth connect: discovery failed", provider=client.provider, error=str(exc))
            raise _Refused(502, "provider_unavailable", "the provider is unreachable") from None

    def _flow(self, request: web.Request, client: ProviderClient) -> Flow:
        """The flow this browser started for this callback (cookie and state checked)."""
        try:
            return open_flow(
                self.state_key,
                request.cookies.get(COOKIE_NAME),
                provider=client.provider,
                state=request.query.get("state"),
                now=self.clock(),
                max_age_s=self.settings.oauth_state_max_age_s,
            )
        except FlowRefused as exc:
            log.warning(
                "oauth connect: callback refused", provider=client.provider, reason=exc.reason
            )
            raise _Refused(400, "invalid_state", _REFUSALS[exc.reason]) from None

    async def _tokens(self, client: ProviderClient, flow: Flow, code: str) -> TokenAnswer:
        """The provider's tokens for ``code``, redeemed with the flow's verifier."""
        endpoints = await self._endpoints(client)
        form = token_form(
            client,
            code=code,
            redirect_uri=self.redirect_uri(client.provider),
            verifier=flow.verifier,
        )
        try:
            answer = await exchange_code(self.session, endpoints.token_endpoint, form)
        except ExchangeFailed as exc:
            log.warning(
                "oauth connect: code exchange failed",
                provider=client.provider,
                error=exc.error,
                status=exc.status,
            )
            if exc.refused:
                raise _Refused(
                    400, "code_exchange_refused", "the provider refused the code", exc.error
                ) from None
            raise _Refused(
                502, "provider_unavailable", "the provider's token endpoint failed"
            ) from None
        register_secrets(t for t in (answer.access_token, answer.refresh_token) if t)
        return answer

    async def _store(
        self, client: ProviderClient, flow: Flow, answer: TokenAnswer
    ) -> tuple[str, str]:
        """Create or re-activate the account the answer's id_token names (bound to its stable
        subject; an account of the same e-mail bound to another subject is refused): (id,
        email)."""
        try:
            issuer = (await self._endpoints(client)).issuer
            who = identity(client, answer, flow.nonce, issuer=issuer, now=self.clock())
        except AnswerError as exc:
            log.warning(
                "oauth connect: unusable token answer", provider=client.provider, error=str(exc)
            )
            raise _Refused(
                502, "invalid_provider_answer", "the provider's answer names no user"
            ) from None
        if not answer.refresh_token:
            log.warning("oauth connect: no refresh token", provider=client.provider)
            raise _Refused(502, "no_refresh_token", "the provider granted no offline access")
        try:
            account = await add_account(
                self.pool,
                self.keyring,
                provider=client.provider,
                email=who.email,
                refresh_token=answer.refresh_token,
                shard_count=self.settings.shard_count,
                subject=who.subject,
            )
        except AccountOfAnotherUser:
            log.warning(
                "oauth connect: the e-mail's account is another user's", provider=client.provider
            )
            raise _Refused(
                409, "account_of_another_user", "this e-mail's account belongs to another user"
            ) from None
        except (OperatorError, asyncpg.PostgresError, OSError) as exc:
            log.error(
                "oauth connect: storing the account failed",
                provider=client.provider,
                error=type(exc).__name__,
            )
            raise _Refused(
                503, "unavailable", "the account could not be stored; try again"
            ) from None
        log.info(
            "oauth connect: account connected", provider=client.provider, account_id=str(account.id)
        )
        return str(account.id), who.email

    async def _begun(self, request: web.Request) -> StartClaims:
        """The host's start token for this provider, spent now; 403 for anything else."""
        provider = request.match_info["provider"]
        try:
            start = open_start(self.start_key, request.query.get("token"), now=self.clock())
        except StartRefused as refused:
            log.info("oauth connect: start refused", provider=provider, reason=refused.reason)
            raise _Refused(403, "start_refused", _START_REFUSALS[refused.reason]) from None
        if start.provider != provider:
            raise _Refused(403, "start_refused", "the start token is for another provider")
        expires_at = datetime.fromtimestamp(start.expires_at, UTC)
        if not await spend_nonce(self.pool, start.nonce, expires_at):
            log.info("oauth connect: start token reused", provider=provider)
            raise _Refused(403, "start_refused", "the start token was used already")
        return start

    def _connected(self, flow: Flow, account_id: str, email: str) -> web.Response:
        start = StartClaims(flow.provider, flow.user_ref, flow.return_state, 0, "")
        result = seal_result(self.start_key, start, account_id=account_id, now=self.clock())
        target = self.settings.oauth_success_redirect_url
        if target:
            return _redirect(_with_query(target, {"result": result}))
        body = {"result": result, "account_id": account_id, "provider": flow.provider}
        return web.json_response(body | {"email": email}, headers=_NO_STORE)


class _Refused(Exception):
    """A step of the flow refuses: the answer's status and JSON error."""

    def __init__(
        self, status: int, error: str, detail: str, provider_error: str | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail
        self.provider_error = provider_error

    def response(self) -> web.Response:
        return _error(self.status, self.error, self.detail, self.provider_error)


def _error(status: int, error: str, detail: str, provider_error: str | None = None) -> web.Response:
    body = {"error": error, "detail": detail}
    if provider_error is not None:
        body["provider_error"] = provider_error
    return web.json_response(body, status=status, headers=_NO_STORE)


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, **_NO_STORE})


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, (parts.query, urlencode(params))))
    return urlunsplit(parts._replace(query=query))


def add_connect_routes(
    app: web.Application,
    settings: Settings,
    pool: PgPool,
    keyring: Keyring,
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add the flow's routes to ``app`` (nothing when the flow is disabled).

    ``session`` reaches the providers (its TLS context trusts ``ca_bundle``); the caller owns
    and closes it, as it owns the pool.
    """
    if (
        not settings.oauth_connect_enabled
        or settings.oauth_state_secret is None
        or settings.oauth_start_secret is None
    ):
        return
    flow = ConnectFlow(
        settings,
        pool,
        keyring,
        session,
        provider_clients(settings),
        EndpointBook(settings, session),
        settings.oauth_state_secret.get_secret_value().encode(),
        settings.oauth_start_secret.get_secret_value().encode(),
        clock,
    )
    app.router.add_get(START_PATH, flow.start)
    app.router.add_get(CALLBACK_PATH, flow.callback)


def create_connect_app(
    settings: Settings,
    pool: PgPool,
    keyring: Keyring,
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """An application serving only the flow's routes (none when it is disabled)."""
    app = web.Application()
    add_connect_routes(app, settings, pool, keyring, session, clock=clock)
    return app
