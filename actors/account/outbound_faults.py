"""Test-only fault points of the outbound writer (``IW_FAULT_OUTBOX_HOLD_FILE``), off by default.

Once ``install_outbox_hold`` named a point and a file (``supervisor.replica`` does so from the
settings), the writer waits at that point while the file exists, so a crash test can kill or
freeze the replica there: ``AFTER_BINDING`` (a create's binding committed, the provider not yet
called) or ``AFTER_PROVIDER_WRITE`` (the provider answered, our commit not yet made).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog

AFTER_BINDING = "outbox.after_binding"
AFTER_PROVIDER_WRITE = "outbox.after_provider_write"
HELD = "outbox write held (fault injection)"

log = structlog.get_logger("actors.account.outbound_faults")

# (point, file) of the one process-wide hold; None in production.
_hold: tuple[str, Path] | None = None


def install_outbox_hold(point: str, path: Path | None) -> None:
    """Hold the writer at ``point`` while ``path`` exists (None: remove the hold)."""
    global _hold  # noqa: PLW0603 - one process-wide test hook, off by default
    _hold = None if path is None else (point, path)


async def fault_point(point: str, poll_s: float = 0.05) -> None:
    """Wait here while the hold file exists, if ``point`` is the held one; else return at once."""
    if _hold is None or _hold[0] != point:
        return
    held = anyio.Path(_hold[1])
    if await held.exists():
        log.warning(HELD, point=point)
    # Another process removes the file, so there is no event to wait on: poll it.
    while await held.exists():  # noqa: ASYNC110
        await anyio.sleep(poll_s)
