"""The demo's people: a user in its emulator for each demo account, seeded with events, and
edits made through the emulators' control objects as a person would in the provider's own UI.

Invariant: each demo account's stored refresh token is registered with its emulator, so the
actors refresh real tokens over HTTP(S) exactly as they would against Google and Microsoft.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from providers.google.emulator import GoogleEmulator
from providers.interface import CalendarProvider
from providers.microsoft.emulator.server import MicrosoftEmulator

DEMO_CLIENT_ID = "integration-worker-demo"
_TITLES = ("Standup", "1:1", "Design review", "Lunch", "Customer call", "Focus time", "Retro")


@dataclass(slots=True)
class EmulatedProvider(abc.ABC):
    """One emulator, the client the actors use against it, and its simulated people."""

    provider: CalendarProvider
    rng: random.Random
    users: list[str] = field(default_factory=list)
    edits: int = 0

    def add_user(self, email: str, refresh_token: str) -> None:
        """Register a demo account's user with its stored refresh token, and a few events."""
        self._register(email, refresh_token)
        self.users.append(email)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for _ in range(self.rng.randint(2, 5)):
            self._create(email, self._timed(now))
        weekly = now.replace(hour=9) - timedelta(days=7 * self.rng.randint(0, 8))
        self._create(email, self._weekly_series(weekly))

    def edit_once(self) -> None:
        """One person changes one thing in their calendar, as in the provider's own UI."""
        if not self.users:
            return
        email = self.rng.choice(self.users)
        singles = self._single_event_ids(email)
        roll = self.rng.random()
        if roll < 0.4 or not singles:
            self._create(email, self._timed(datetime.now(UTC)))
        elif roll < 0.8:
            self._rename(email, self.rng.choice(singles), self.rng.choice(_TITLES))
        else:
            self._delete(email, self.rng.choice(singles))
        self.edits += 1

    def _timed(self, around: datetime) -> tuple[str, datetime, datetime]:
        start = around + timedelta(hours=self.rng.randint(-72, 24 * 20))
        return self.rng.choice(_TITLES), start, start + timedelta(minutes=30)

    @abc.abstractmethod
    def _register(self, email: str, refresh_token: str) -> None: ...

    @abc.abstractmethod
    def _create(self, email: str, event: tuple[str, datetime, datetime] | dict[str, Any]) -> None:
        """Create a timed (title, start, end) event, or a provider-shaped body as given."""

    @abc.abstractmethod
    def _weekly_series(self, first: datetime) -> dict[str, Any]:
        """A weekly 09:00 Berlin-time series (it keeps local time across DST)."""

    @abc.abstractmethod
    def _single_event_ids(self, email: str) -> list[str]: ...

    @abc.abstractmethod
    def _rename(self, email: str, event_id: str, title: str) -> None: ...

    @abc.abstractmethod
    def _delete(self, email: str, event_id: str) -> None: ...

    @abc.abstractmethod
    def fail_next_list(self) -> None:
        """Make the provider answer the next events call with a 503."""


def _wall(moment: datetime) -> str:
    """Wall-clock time without offset (the event's time zone field gives the zone)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(slots=True)
class GoogleSide(EmulatedProvider):
    """Google Calendar through its emulator."""

    emulator: GoogleEmulator | None = None

    def _control(self) -> Any:
        assert self.emulator is not None
        return self.emulator.control

    def _register(self, email: str, refresh_token: str) -> None:
        self._control().add_user(email, DEMO_CLIENT_ID, refresh_token=refresh_token)

    def _create(self, email: str, event: tuple[str, datetime, datetime] | dict[str, Any]) -> None:
        if isinstance(event, tuple):
            title, start, end = event
            event = {
                "summary": title,
                "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": end.isoformat()},
            }
        self._control().create_event(email, event)

    def _weekly_series(self, first: datetime) -> dict[str, Any]:
        return {
            "summary": "Weekly planning",
            "start": {"dateTime": _wall(first), "timeZone": "Europe/Berlin"},
            "end": {"dateTime": _wall(first + timedelta(hours=1)), "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=30"],
        }

    def _single_event_ids(self, email: str) -> list[str]:
        return [
            e["id"]
            for e in self._control().events(email)
            if e.get("status") != "cancelled"
            and "recurrence" not in e
            and "recurringEventId" not in e
        ]

    def _rename(self, email: str, event_id: str, title: str) -> None:
        self._control().update_event(email, event_id, {"summary": title})

    def _delete(self, email: str, event_id: str) -> None:
        self._control().delete_event(email, event_id)

    def fail_next_list(self) -> None:
        self._control().add_fault("unavailable", path="*events*", count=1)


@dataclass(slots=True)
class MicrosoftSide(EmulatedProvider):
    """Outlook calendars through the Microsoft Graph emulator."""

    emulator: MicrosoftEmulator | None = None

    def _control(self) -> Any:
        assert self.emulator is not None
        return self.emulator.control

    def _register(self, email: str, refresh_token: str) -> None:
        self._control().add_user(email, DEMO_CLIENT_ID, refresh_token=refresh_token)

    def _create(self, email: str, event: tuple[str, datetime, datetime] | dict[str, Any]) -> None:
        if isinstance(event, tuple):
            title, start, end = event
            event = {
                "subject": title,
                "start": {"dateTime": _wall(start.astimezone(UTC)), "timeZone": "UTC"},
                "end": {"dateTime": _wall(end.astimezone(UTC)), "timeZone": "UTC"},
            }
        self._control().create_event(email, event)

    def _weekly_series(self, first: datetime) -> dict[str, Any]:
        zone = "W. Europe Standard Time"  # Graph speaks Windows zone names
        return {
            "subject": "Weekly planning",
            "start": {"dateTime": _wall(first), "timeZone": zone},
            "end": {"dateTime": _wall(first + timedelta(hours=1)), "timeZone": zone},
            "recurrence": {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": [first.strftime("%A").lower()],
                },
                "range": {
                    "type": "numbered",
                    "startDate": first.date().isoformat(),
                    "numberOfOccurrences": 30,
                },
            },
        }

    def _single_event_ids(self, email: str) -> list[str]:
        return [
            e["id"]
            for e in self._control().events(email)
            if e.get("type", "singleInstance") == "singleInstance" and not e.get("isCancelled")
        ]

    def _rename(self, email: str, event_id: str, title: str) -> None:
        self._control().update_event(email, event_id, {"subject": title})

    def _delete(self, email: str, event_id: str) -> None:
        self._control().delete_event(email, event_id)

    def fail_next_list(self) -> None:
        self._control().add_fault("unavailable", path="*calendarView*", count=1)
