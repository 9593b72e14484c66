"""The account kinds registry: one entry per ``accounts.provider`` value.

An entry says everything the system needs to run accounts of that kind: how to build its
provider client from the settings, which actor each account runs (a child spec), what the
provider can do (``providers.capabilities``), which request budget its calls draw on, how the
account's stable identity is derived (the capabilities' ``identity``), and the outbox
operations it accepts, each with the schema its payload is validated against when enqueued.

Invariants:
- a kind's name is unique in its registry, and is the value ``accounts.provider``,
  ``push_channels.provider`` and ``outbox.kind`` hold; ``migrate`` writes every registered kind
  and its operations into ``account_kinds`` / ``outbox_operations``, which those columns
  reference, so an account of an unknown kind cannot be stored;
- nothing outside ``providers/`` and this package compares provider names: code that behaves
  per kind reads the entry (or its capabilities);
- entries are frozen; ``kinds.default_registry()`` builds a fresh registry each call, so a test
  adding a kind never changes another test's registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from actors.account.context import AccountContext
from actors.spec import ChildSpec
from cluster.rate_limit import BucketSpec
from config.settings import Settings
from providers.capabilities import BudgetScope, Capabilities
from providers.interface import CalendarProvider

# What a kind may be called: it appears in URLs (/webhooks/<path>), Redis keys and metrics.
KIND_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

# Where a provider delivers a webhook path (``google``, ``microsoft/lifecycle``) through the
# gateway, or None when the replica has no public address (no push).
WebhookUrl = Callable[[str], str | None]
ClientFactory = Callable[[Settings, aiohttp.ClientSession, WebhookUrl], CalendarProvider]
SpecFactory = Callable[[AccountContext], ChildSpec[object]]


class PayloadError(ValueError):
    """An outbox payload does not match its operation's schema; the message names the fields
    (never their values, which may be an application's private data)."""


@dataclass(frozen=True, slots=True)
class OutboxOperation:
    """One outbox operation a kind accepts: its name (``outbox.operation``) and the pydantic
    model its payload must satisfy when it is enqueued."""

    name: str
    payload: type[BaseModel]
    summary: str = ""
    # Stored in the outbox's ``payload`` column (True), or in the typed calendar columns,
    # which predate kinds and which applications insert directly (the calendar operations).
    json_payload: bool = True

    def validate(self, payload: Mapping[str, Any]) -> BaseModel:
        """The payload as its model, or ``PayloadError`` naming what is wrong."""
        try:
            return self.payload.model_validate(dict(payload))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise PayloadError(f"{self.name} payload is invalid: {problems}") from None


@dataclass(frozen=True, slots=True)
class AccountKind:
    """Everything one kind of account needs from the rest of the system."""

    name: str
    capabilities: Capabilities
    configured: Callable[[Settings], bool]  # whether the settings hold its OAuth client
    client: ClientFactory  # built only when configured
    spec: SpecFactory  # the actor every account of the kind runs
    budget: Callable[[Settings], BucketSpec]  # its calls' shared request budget
    # The budget's name in Redis: kinds calling one provider project share it (APP scope).
    budget_group: str
    operations: tuple[OutboxOperation, ...] = ()
    # The gateway path its notifications arrive on (``/webhooks/<path>``); None: no push.
    webhook_path: str | None = None

    def budget_key(self, account_id: str) -> str:
        """The request bucket an account's calls draw on."""
        if self.capabilities.budget_scope is BudgetScope.APP:
            return self.budget_group
        return f"{self.budget_group}:mailbox:{account_id}"

    def operation(self, name: str) -> OutboxOperation | None:
        """The outbox operation ``name`` of this kind, or None."""
        return next((op for op in self.operations if op.name == name), None)


@dataclass(slots=True)
class KindRegistry:
    """Account kinds by name."""

    _kinds: dict[str, AccountKind] = field(default_factory=dict)

    def register(self, kind: AccountKind) -> AccountKind:
        """Add ``kind``; a second kind of the same name is refused."""
        if kind.name in self._kinds:
            raise ValueError(f"account kind {kind.name!r} is already registered")
        if KIND_NAME.fullmatch(kind.name) is None:
            raise ValueError(
                f"account kind name {kind.name!r} must be lowercase letters, digits, '.', '_'"
                " or '-' (at most 64, a letter or digit first)"
            )
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> AccountKind | None:
        """The kind called ``name``, or None."""
        return self._kinds.get(name)

    def __getitem__(self, name: str) -> AccountKind:
        kind = self._kinds.get(name)
        if kind is None:
            raise KeyError(f"unknown account kind {name!r}")
        return kind

    def __iter__(self) -> Iterator[AccountKind]:
        return iter(self._kinds.values())

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> tuple[str, ...]:
        """Every registered kind's name, in registration order."""
        return tuple(self._kinds)

    def catalog(self) -> dict[str, tuple[tuple[str, bool], ...]]:
        """Every kind with the outbox operations it accepts, each with whether its payload is
        JSON (what ``migrate`` records)."""
        return {
            k.name: tuple((op.name, op.json_payload) for op in k.operations)
            for k in self._kinds.values()
        }

    def clients(
        self, settings: Settings, session: aiohttp.ClientSession, webhook_url: WebhookUrl
    ) -> dict[str, CalendarProvider]:
        """A client for every kind whose provider is configured, by kind name."""
        return {
            kind.name: kind.client(settings, session, webhook_url)
            for kind in self._kinds.values()
            if kind.configured(settings)
        }

    def configured(self, settings: Settings) -> frozenset[str]:
        """The kinds whose OAuth client the settings hold (the accounts replicas run)."""
        return frozenset(kind.name for kind in self._kinds.values() if kind.configured(settings))
