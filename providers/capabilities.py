"""What a provider can do and how it wants to be treated, declared by the provider itself.

Everything above ``providers/`` that behaves differently per provider reads one of these fields
instead of comparing provider names: channel scope (the actor's push), keep-alive (token
refresh while idle), the request budget's scope (the replica's buckets), what the account syncs,
which id_token claims name the account (the connect flow) and the token grant's quirks.

Invariants:
- plain frozen data, no I/O; each provider package declares one ``CAPABILITIES`` value and the
  account kinds registry (``kinds``) attaches it to every kind using that provider's client;
- ``identity.claims`` is tried in order and the first non-empty string wins; when ``verified_by``
  names a claim, that claim must be true or the identity is refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ChannelScope(enum.Enum):
    """How push notifications are subscribed."""

    NONE = "none"  # no push: the account is polled
    CALENDAR = "calendar"  # one channel per followed calendar (Google watch channels)
    MAILBOX = "mailbox"  # one subscription for the whole mailbox (Graph ``/me/events``)


class BudgetScope(enum.Enum):
    """Who shares a request budget."""

    APP = "app"  # every account of the app (Google: per project)
    ACCOUNT = "account"  # each account alone (Graph: per app and mailbox)


class Syncs(enum.Enum):
    """What an account of the provider keeps in Postgres."""

    CALENDARS = "calendars"  # calendars and their events (the calendar account actor)
    RECORDS = "records"  # a provider's records (chat messages, matters, rows)


@dataclass(frozen=True, slots=True)
class Identity:
    """How an id_token names the account: its stable subject, its display name (the e-mail the
    account is listed by), and who must have issued it."""

    claims: tuple[str, ...]  # the display name: the first non-empty of these
    verified_by: str | None = None  # a claim that must be true, e.g. ``email_verified``
    # The stable subject: these claims joined by ":" (Google ``sub``; Entra ``tid`` and
    # ``oid``: its ``preferred_username`` may change and must not authorize anything).
    subject_claims: tuple[str, ...] = ("sub",)
    # The accepted ``iss`` values; empty: the one the discovery document names, with its
    # ``{tenantid}`` replaced by the token's ``tid``.
    issuers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One provider's declared behaviour."""

    channel_scope: ChannelScope
    budget_scope: BudgetScope
    identity: Identity
    syncs: Syncs = Syncs.CALENDARS
    # The calendar a MAILBOX-scoped subscription is keyed to (its channel row's calendar).
    mailbox_calendar: str = "primary"
    # Refresh tokens lapse when unused for a while: refresh periodically even when idle.
    keepalive: bool = False
    # The authorization_code grant names the scopes again (it names the resource there).
    scope_in_token_grant: bool = False
    # How long after a channel is replaced its messages may still arrive (the provider's
    # redelivery horizon): the retired channel stays accepted that long.
    redelivery_horizon_s: float = 15 * 60.0

    def pushes_calendar(self, calendar_id: str) -> bool:
        """Whether ``calendar_id`` gets a channel of its own."""
        if self.channel_scope is ChannelScope.CALENDAR:
            return True
        return self.channel_scope is ChannelScope.MAILBOX and calendar_id == self.mailbox_calendar

    @property
    def channels_follow_calendars(self) -> bool:
        """Whether a channel ends with its calendar (not with a mailbox-wide subscription)."""
        return self.channel_scope is ChannelScope.CALENDAR
