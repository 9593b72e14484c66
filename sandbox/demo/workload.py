"""The workload: simulated people editing their calendars at a steady pace.

Invariants: edits go to the emulators only (as a person in the provider's UI), never to the
database; an emulator refusing an edit is counted and shown, never fatal; the pace is
``edits_per_s`` on average over both providers.
"""

from __future__ import annotations

import random

import anyio
import structlog

from sandbox.demo.journal import EditJournal
from sandbox.demo.people import EmulatedProvider

log = structlog.get_logger("sandbox.demo.workload")


async def simulate_people(
    sides: list[EmulatedProvider], journal: EditJournal, rng: random.Random, edits_per_s: float
) -> None:
    """Creates, renames and deletes, one at a time, until cancelled."""
    while True:
        await anyio.sleep(1.0 / edits_per_s)
        side = rng.choice(sides)
        try:
            side.edit_once()
        except Exception as exc:  # an emulator refusing an edit is shown, never fatal
            journal.errors += 1
            log.warning("simulated edit failed", error=str(exc))
