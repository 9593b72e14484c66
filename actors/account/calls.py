"""One account's provider calls: a fresh enough access token, drawn from the shared budget.

Invariants:
- a call starts with a token not about to expire (``should_refresh``); an Unauthorized answer
  refreshes the token once and retries the call once;
- a refreshed access token, and a rotated refresh token with it, is stored in one fenced
  transaction before it is used, so a crash never loses a rotated refresh token;
- every call takes one token from the provider's shared bucket in Redis: a spent bucket is
  ``Throttled``, an unreachable one ``Transient``; a throttled answer is reported to the budget,
  which blocks everyone sharing it when warranted (an account's own budget at once, a shared
  one once several accounts are throttled), for at most ``rate_penalty_max_s`` of Retry-After;
- a Retry-After beyond ``retry_after_max_s`` is cut to it before the error leaves (the sync's
  and the outbox's retries obey the cut value); every cut is logged and counted;
- an account without a subject (added by refresh token) learns it at a refresh: from the
  answer, else by asking the provider (``identify``: once per incarnation when it names
  nobody, again at the next refresh when it failed); a refresh naming another subject than the
  account's is ``AuthRevoked`` and its tokens are not stored: another user's credentials never
  sync into an account.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import structlog

from actors.account.context import AccountContext
from actors.account.policy import should_refresh
from cluster.rate_limit import RateLimited, RateLimiterUnavailable
from metrics import events as metrics
from providers.errors import AuthRevoked, ProviderError, Throttled, Transient, Unauthorized
from providers.interface import CalendarProvider
from store.accounts import Account, Learned, learn_subject
from store.credentials import Credentials, store_credentials
from store.db import Queryable
from store.fencing import fenced_transaction

T = TypeVar("T")
log = structlog.get_logger("actors.account.calls")


@dataclass(slots=True)
class AccountCalls:
    """The provider calls of one actor incarnation (``creds`` follows every refresh)."""

    ctx: AccountContext
    account: Account
    epoch: int
    creds: Credentials
    # Whether this incarnation asked the provider who the account is: a grant that names
    # nobody (the calendar scope alone) does not later, so it is asked once, not hourly.
    identify_asked: bool = False

    @property
    def provider(self) -> CalendarProvider:
        """The client of the account's provider."""
        return self.ctx.providers[self.account.provider]

    async def call(self, request: Callable[[str], Awaitable[T]]) -> T:
        """Call the provider with a fresh enough token; after one Unauthorized, refresh once."""
        token = self.creds.access_token
        if token is None or should_refresh(
            token, self.creds.access_token_expires_at, self.ctx.clock()
        ):
            token = await self.refresh()
        try:
            return await self._metered(request, token)
        except Unauthorized:
            token = await self.refresh()
            return await self._metered(request, token)

    async def refresh(self) -> str:
        """Refresh the access token; store it (and a rotated refresh token) in one transaction."""
        creds = self.creds
        try:
            grant = await self.provider.refresh_access_token(creds.refresh_token)
        except ProviderError as error:
            metrics.token_refresh_failures.labels(self.provider.name, error.kind.value).inc()
            self._bound_retry_after(error)
            raise
        subject = grant.subject
        if subject is None and self.account.subject is None and not self.identify_asked:
            self.identify_asked = True
            subject = await self._identify(grant.access_token)
        updated = Credentials(
            creds.account_id,
            refresh_token=grant.refresh_token or creds.refresh_token,
            access_token=grant.access_token,
            access_token_expires_at=grant.expires_at,
            scopes=grant.scopes or creds.scopes,
        )
        async with fenced_transaction(self.ctx.pool, self.account.shard, self.epoch) as conn:
            if subject is not None:
                await self._learn(conn, subject)
            await store_credentials(conn, self.ctx.keyring, creds.account_id, updated)
        self.creds = updated
        return grant.access_token

    async def _identify(self, access_token: str) -> str | None:
        try:
            return await self.provider.identify(access_token)
        except ProviderError as error:  # the next refresh asks again
            self.identify_asked = False
            log.warning("subject not learned", account=str(self.account.id), error=error.kind.value)
            return None

    async def _learn(self, conn: Queryable, subject: str) -> None:
        """Bind the account to the refresh's subject, or refuse another user's credentials."""
        account = self.account
        learned = await learn_subject(conn, account.id, account.provider, subject)
        if learned is Learned.CONFLICT:
            raise AuthRevoked(
                "the credentials belong to another user than the account's",
                provider=self.provider.name,
                reason="subject_mismatch",
            )
        if learned is Learned.HELD_ELSEWHERE:
            # The same user added twice (an alias e-mail): both keep syncing; the operator
            # removes one. Never re-bound silently.
            log.warning("account's user is bound to another account", account=str(account.id))
            return
        if learned is Learned.BOUND:
            log.info("account bound to its subject", account=str(account.id))
        self.account = replace(account, subject=subject)

    def _bound_retry_after(self, error: ProviderError) -> None:
        """Cut the error's Retry-After to ``retry_after_max_s``: what the actor's retry and the
        outbox's backoff obey."""
        if error.retry_after_s is not None:
            bound = self.ctx.retry_after_max_s
            error.retry_after_s = self._bounded(error.retry_after_s, bound, "retry")

    def _bounded(self, seconds: float, bound: float, use: str) -> float:
        if seconds <= bound:
            return seconds
        provider = self.provider.name
        metrics.retry_after_clamped.labels(provider, use).inc()
        log.warning(
            "provider Retry-After cut to our bound",
            provider=provider,
            use=use,
            retry_after_s=seconds,
            bound_s=bound,
        )
        return bound

    async def _metered(self, request: Callable[[str], Awaitable[T]], token: str) -> T:
        """One provider call drawn from the shared budget; a provider's Retry-After is shared."""
        provider = self.provider.name
        gate = self.ctx.rate_gate(self.account.provider, str(self.account.id))  # by kind
        if gate is None:
            try:
                return await request(token)
            except ProviderError as error:
                self._bound_retry_after(error)
                raise
        try:
            await gate.acquire(1, max_wait_s=self.ctx.rate_wait_max_s)
        except RateLimited as limited:
            raise Throttled(
                "shared request budget spent", provider=provider, retry_after_s=limited.wait_s
            ) from None
        except RateLimiterUnavailable:
            raise Transient("request budget unavailable (Redis)", provider=provider) from None
        try:
            return await request(token)
        except ProviderError as error:
            if isinstance(error, Throttled):
                # The account backs off (its retry); the budget decides whether everyone
                # sharing it must too: its own at once, a shared one once several accounts
                # are throttled (providers.md A.5, B.3).
                retry_after = error.retry_after_s
                if retry_after:
                    retry_after = self._bounded(retry_after, self.ctx.rate_penalty_max_s, "budget")
                with contextlib.suppress(RateLimiterUnavailable):
                    await gate.throttled(str(self.account.id), retry_after or None)
            self._bound_retry_after(error)
            raise
