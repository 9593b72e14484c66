"""The demo's people in each emulator: Google Calendar and Outlook (Microsoft Graph).

Invariants: each demo account's stored refresh token is registered with its emulator for the
demo's OAuth client, so the actors refresh real tokens over HTTP(S) exactly as they would against
Google and Microsoft; faults are the emulators' own (fault rules, revocation, sync state
invalidation), never a shortcut around the clients.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.demo.people import SERIES_OCCURRENCES as OCCURRENCES
from sandbox.demo.people import EditHook, EmulatedProvider, TimedEvent, wall
from sandbox.emulators.google import GoogleEmulator
from sandbox.emulators.microsoft.server import MicrosoftEmulator

DEMO_CLIENT_ID = "integration-worker-demo"
_GOOGLE_5XX = ("backend_error", "unavailable")  # 500, 503
_GRAPH_5XX = ("server_error", "unavailable", "gateway_timeout")  # 500, 503, 504


class GoogleSide(EmulatedProvider):
    """Google Calendar through its emulator; a user's primary calendar id is their email."""

    name = "google"

    def __init__(
        self, emulator: GoogleEmulator, rng: random.Random, on_edit: EditHook | None = None
    ) -> None:
        super().__init__(rng, on_edit)
        self.control = emulator.control

    def _register(self, email: str, refresh_token: str) -> None:
        self.control.add_user(email, DEMO_CLIENT_ID, refresh_token=refresh_token)

    def _create(self, email: str, event: TimedEvent | dict[str, Any]) -> str:
        if isinstance(event, tuple):
            title, start, end = event
            event = {
                "summary": title,
                "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": end.isoformat()},
            }
        return str(self.control.create_event(email, event)["id"])

    def _weekly_series(self, first: datetime) -> dict[str, Any]:
        return {
            "summary": "Weekly planning",
            "start": {"dateTime": wall(first), "timeZone": "Europe/Berlin"},
            "end": {"dateTime": wall(first + timedelta(hours=1)), "timeZone": "Europe/Berlin"},
            "recurrence": [f"RRULE:FREQ=WEEKLY;COUNT={OCCURRENCES}"],
        }

    def _rename(self, email: str, event_id: str, title: str) -> None:
        self.control.update_event(email, event_id, {"summary": title})

    def _delete(self, email: str, event_id: str) -> None:
        self.control.delete_event(email, event_id)

    def throttle(self, retry_after_s: float) -> str:
        self.control.add_fault(
            "rate_limit_429", path="*/events", count=1, retry_after=f"{retry_after_s:g}"
        )
        return "429"

    def server_error(self, pick: int) -> str:
        kind = _GOOGLE_5XX[pick % len(_GOOGLE_5XX)]
        self.control.add_fault(kind, path="*/events", count=1)
        return kind

    def expire_sync_state(self, email: str) -> None:
        self.control.invalidate_sync_tokens(email)

    def revoke(self, refresh_token: str) -> None:
        self.control.revoke_refresh_token(refresh_token)

    def reauthorize(self, email: str) -> str:
        return self.control.add_user(email, DEMO_CLIENT_ID)["refresh_token"]

    def clear_faults(self) -> None:
        self.control.clear_faults()


class MicrosoftSide(EmulatedProvider):
    """Outlook calendars through the Microsoft Graph emulator; users are named by their UPN."""

    name = "microsoft"

    def __init__(
        self, emulator: MicrosoftEmulator, rng: random.Random, on_edit: EditHook | None = None
    ) -> None:
        super().__init__(rng, on_edit)
        self.control = emulator.control

    def _register(self, email: str, refresh_token: str) -> None:
        self.control.add_user(email, DEMO_CLIENT_ID, refresh_token=refresh_token)

    def _create(self, email: str, event: TimedEvent | dict[str, Any]) -> str:
        if isinstance(event, tuple):
            title, start, end = event
            event = {
                "subject": title,
                "start": {"dateTime": wall(start.astimezone(UTC)), "timeZone": "UTC"},
                "end": {"dateTime": wall(end.astimezone(UTC)), "timeZone": "UTC"},
            }
        return str(self.control.create_event(email, event)["id"])

    def _weekly_series(self, first: datetime) -> dict[str, Any]:
        zone = "W. Europe Standard Time"  # Graph speaks Windows zone names
        return {
            "subject": "Weekly planning",
            "start": {"dateTime": wall(first), "timeZone": zone},
            "end": {"dateTime": wall(first + timedelta(hours=1)), "timeZone": zone},
            "recurrence": {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": [first.strftime("%A").lower()],
                },
                "range": {
                    "type": "numbered",
                    "startDate": first.date().isoformat(),
                    "numberOfOccurrences": OCCURRENCES,
                },
            },
        }

    def _rename(self, email: str, event_id: str, title: str) -> None:
        self.control.update_event(email, event_id, {"subject": title})

    def _delete(self, email: str, event_id: str) -> None:
        self.control.delete_event(email, event_id)

    def throttle(self, retry_after_s: float) -> str:
        self.control.add_fault(
            "throttled", path="*/calendarView/delta", count=1, retry_after=f"{retry_after_s:g}"
        )
        return "429"

    def server_error(self, pick: int) -> str:
        kind = _GRAPH_5XX[pick % len(_GRAPH_5XX)]
        self.control.add_fault(kind, path="*/calendarView/delta", count=1)
        return kind

    def expire_sync_state(self, email: str) -> None:
        self.control.invalidate_delta_tokens(email)

    def revoke(self, refresh_token: str) -> None:
        self.control.revoke_refresh_token(refresh_token)

    def reauthorize(self, email: str) -> str:
        return self.control.grant_refresh_token(email, DEMO_CLIENT_ID)

    def clear_faults(self) -> None:
        self.control.clear_faults()
