"""Fault points for real-process tests: hold a replica at a named place while a file exists.

The production code has two seams, both no-ops until something is installed:
``store.fencing.install_fault_hold`` (awaited before every fenced write's epoch check) and
``actors.account.pause_points.install_pause`` (the outbound writer's named points). This module
installs them from the environment of a process started through ``sandbox.replica``:

- ``IW_FAULT_HOLD_FILE``: while the file exists, every fenced write waits before its epoch check
  (split-brain tests hold a replica there during a takeover);
- ``IW_FAULT_OUTBOX_HOLD_FILE`` and ``IW_FAULT_OUTBOX_HOLD_AT`` (``outbox.after_binding``, the
  default, or ``outbox.after_provider_write``): while the file exists, the outbound writer waits
  at that point, where the test kills or freezes the process.

Another process removes the file, so there is no event to wait on: the holds poll it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import anyio
import structlog

from actors.account.pause_points import AFTER_BINDING, POINTS, PauseHook, install_pause
from store.fencing import install_fault_hold

FENCED_HELD = "fenced write held (fault injection)"
OUTBOX_HELD = "outbox write held (fault injection)"

log = structlog.get_logger("sandbox.faults")


async def hold_while_exists(path: Path, message: str = FENCED_HELD, poll_s: float = 0.05) -> None:
    """Wait while ``path`` exists, logging ``message`` once if it did."""
    held = anyio.Path(path)
    if await held.exists():
        log.warning(message)
    while await held.exists():  # noqa: ASYNC110 - another process removes it: poll
        await anyio.sleep(poll_s)


def outbox_hold(point: str, path: Path) -> PauseHook:
    """A pause hook holding the outbound writer at ``point`` while ``path`` exists."""
    if point not in POINTS:
        raise ValueError(f"IW_FAULT_OUTBOX_HOLD_AT must be one of {', '.join(POINTS)}")

    async def hook(at: str) -> None:
        if at == point:
            await hold_while_exists(path, OUTBOX_HELD)

    return hook


def install_from_environment(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Install the holds the environment asks for; the names of those installed."""
    installed = []
    if hold_file := environ.get("IW_FAULT_HOLD_FILE"):
        install_fault_hold(partial(hold_while_exists, Path(hold_file)))
        installed.append("fenced writes")
    if outbox_file := environ.get("IW_FAULT_OUTBOX_HOLD_FILE"):
        point = environ.get("IW_FAULT_OUTBOX_HOLD_AT", AFTER_BINDING)
        install_pause(outbox_hold(point, Path(outbox_file)))
        installed.append(f"outbox writes at {point}")
    return installed
