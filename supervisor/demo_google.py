"""The demo's Google side: an in-process Google emulator, a user for each Google demo account,
and simulated people editing their calendars, so incremental syncs have real changes to find.

Invariants:
- the emulator, the HTTP session, the provider and the activity task live exactly as long as
  the ``open_google_demo`` block; the activity task is owned and cancelled there;
- each Google demo account's stored refresh token is registered with the emulator, so the
  actors refresh real tokens over HTTP exactly as they would against Google.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from providers.google.client import GoogleCalendarProvider
from providers.google.emulator import GoogleEmulator
from providers.http import create_session

log = structlog.get_logger("supervisor.demo_google")

DEMO_CLIENT_ID = "integration-worker-demo.apps.googleusercontent.com"
_TITLES = ("Standup", "1:1", "Design review", "Lunch", "Customer call", "Focus time", "Retro")


@dataclass(slots=True)
class GoogleDemo:
    """The running emulator and the client the demo actors use against it."""

    emulator: GoogleEmulator
    provider: GoogleCalendarProvider
    rng: random.Random
    users: list[str] = field(default_factory=list)
    edits: int = 0

    def add_user(self, email: str, refresh_token: str) -> None:
        """Register a demo account's user (with its stored refresh token) and a few events."""
        control = self.emulator.control
        control.add_user(email, DEMO_CLIENT_ID, refresh_token=refresh_token)
        self.users.append(email)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for _ in range(self.rng.randint(2, 5)):
            control.create_event(email, self._timed_event(now))
        weekly = now.replace(hour=9) - timedelta(days=7 * self.rng.randint(0, 8))
        control.create_event(
            email,
            {
                "summary": "Weekly planning",
                "start": {"dateTime": _local(weekly), "timeZone": "Europe/Berlin"},
                "end": {
                    "dateTime": _local(weekly + timedelta(hours=1)),
                    "timeZone": "Europe/Berlin",
                },
                "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=30"],
            },
        )

    def edit_once(self) -> None:
        """One person changes one thing in their calendar, as in Google's own UI."""
        if not self.users:
            return
        control = self.emulator.control
        email = self.rng.choice(self.users)
        singles = [
            e
            for e in control.events(email)
            if e.get("status") != "cancelled"
            and "recurrence" not in e
            and "recurringEventId" not in e
        ]
        roll = self.rng.random()
        if roll < 0.4 or not singles:
            control.create_event(email, self._timed_event(datetime.now(UTC)))
        elif roll < 0.8:
            target = self.rng.choice(singles)
            control.update_event(email, target["id"], {"summary": self.rng.choice(_TITLES)})
        else:
            control.delete_event(email, self.rng.choice(singles)["id"])
        self.edits += 1

    def _timed_event(self, around: datetime) -> dict[str, Any]:
        start = around + timedelta(hours=self.rng.randint(-72, 24 * 20))
        return {
            "summary": self.rng.choice(_TITLES),
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()},
        }


def _local(moment: datetime) -> str:
    """A wall-clock time without offset (the event's ``timeZone`` gives the zone)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


async def _simulate_people(demo: GoogleDemo, edits_per_s: float, fault_rate: float) -> None:
    """Edit calendars at a steady pace and, now and then, make Google answer 503."""
    interval = 1.0 / edits_per_s
    while True:
        await asyncio.sleep(interval)
        demo.edit_once()
        if demo.rng.random() < fault_rate * 10:
            demo.emulator.control.add_fault("unavailable", path="*events*", count=1)


@contextlib.asynccontextmanager
async def open_google_demo(
    rng: random.Random, *, edits_per_s: float = 5.0, fault_rate: float = 0.01
) -> AsyncIterator[GoogleDemo]:
    """Start the emulator, its client, and the simulated people; stop them all on exit."""
    secret = secrets.token_urlsafe(24)
    async with GoogleEmulator("127.0.0.1", 0) as emulator, create_session() as session:
        emulator.control.add_client(DEMO_CLIENT_ID, secret)
        provider = GoogleCalendarProvider(
            session,
            api_base_url=emulator.api_base_url,
            token_uri=emulator.token_uri,
            client_id=DEMO_CLIENT_ID,
            client_secret=secret,
        )
        demo = GoogleDemo(emulator, provider, rng)
        activity = asyncio.get_running_loop().create_task(
            _simulate_people(demo, edits_per_s, fault_rate), name="demo.google-people"
        )
        try:
            yield demo
        finally:
            activity.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await activity
            await provider.aclose()
