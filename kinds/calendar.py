"""The calendar kinds: Google Calendar and Outlook (Microsoft Graph).

Both run the calendar account actor (``actors.account``) and accept the calendar outbox
operations (docs/outbox.md); they differ only in what their providers declare
(``providers.google.CAPABILITIES``, ``providers.microsoft.CAPABILITIES``), their clients and
their request budgets (providers.md A.5, B.3).
"""

from __future__ import annotations

import aiohttp

from actors.account import account_spec
from cluster.rate_limit import BucketSpec
from config.settings import Settings
from kinds.registry import AccountKind, KindRegistry, OutboxOperation, WebhookUrl
from outbox.model import Operation
from outbox.payloads import CancelEventPayload, RebuildAllPayload, UpsertEventPayload
from providers import google, microsoft
from providers.google.client import GoogleCalendarProvider
from providers.interface import CalendarProvider
from providers.microsoft.client import MicrosoftCalendarProvider

# Their payloads live in the outbox's typed columns (docs/outbox.md), not in ``payload``.
CALENDAR_OPERATIONS = (
    OutboxOperation(
        Operation.UPSERT_EVENT.value,
        UpsertEventPayload,
        "create or update a source's event",
        json_payload=False,
    ),
    OutboxOperation(
        Operation.CANCEL_EVENT.value,
        CancelEventPayload,
        "delete a source's event",
        json_payload=False,
    ),
    OutboxOperation(
        Operation.REBUILD_ALL.value,
        RebuildAllPayload,
        "delete and recreate every event of a workspace in a calendar",
        json_payload=False,
    ),
)


def google_configured(settings: Settings) -> bool:
    return bool(settings.google_client_id and settings.google_client_secret)


def google_client(
    settings: Settings, session: aiohttp.ClientSession, _webhook_url: WebhookUrl
) -> CalendarProvider:
    return GoogleCalendarProvider.from_settings(settings, session)


def microsoft_configured(settings: Settings) -> bool:
    return bool(settings.microsoft_client_id and settings.microsoft_client_secret)


def microsoft_client(
    settings: Settings, session: aiohttp.ClientSession, webhook_url: WebhookUrl
) -> CalendarProvider:
    return MicrosoftCalendarProvider.from_settings(
        settings, session, lifecycle_notification_url=webhook_url("microsoft/lifecycle")
    )


def google_budget(settings: Settings) -> BucketSpec:
    """10,000 requests a minute per project, in bursts of a tenth (a stampede cannot spend a
    whole period at once)."""
    rate = settings.google_requests_per_minute
    return BucketSpec.per_period(rate, 60, burst=max(1, rate // 10))


def microsoft_budget(settings: Settings) -> BucketSpec:
    """10,000 requests per 10 minutes per app and mailbox, in bursts of a tenth."""
    rate = settings.microsoft_requests_per_10_minutes
    return BucketSpec.per_period(rate, 600, burst=max(1, rate // 10))


GOOGLE = AccountKind(
    name="google",
    capabilities=google.CAPABILITIES,
    configured=google_configured,
    client=google_client,
    spec=account_spec,
    budget=google_budget,
    budget_group="google",
    operations=CALENDAR_OPERATIONS,
    webhook_path="google",
)
MICROSOFT = AccountKind(
    name="microsoft",
    capabilities=microsoft.CAPABILITIES,
    configured=microsoft_configured,
    client=microsoft_client,
    spec=account_spec,
    budget=microsoft_budget,
    budget_group="microsoft",
    operations=CALENDAR_OPERATIONS,
    webhook_path="microsoft",
)


def register_calendar_kinds(registry: KindRegistry) -> None:
    """Add the Google and Microsoft calendar kinds."""
    registry.register(GOOGLE)
    registry.register(MICROSOFT)
