"""Named pause points of the outbound writer: a seam for crash tests, a no-op in production.

The writer awaits ``pause_point(AFTER_BINDING)`` once a create's binding is committed and
before the provider is called, and ``pause_point(AFTER_PROVIDER_WRITE)`` once the provider
answered and before our commit. Nothing pauses unless a hook was installed (``install_pause``);
the sandbox's replica entry point installs one that holds the writer while a file exists, so a
test can kill or freeze the process exactly there. Production code never installs a hook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

AFTER_BINDING = "outbox.after_binding"
AFTER_PROVIDER_WRITE = "outbox.after_provider_write"
POINTS = (AFTER_BINDING, AFTER_PROVIDER_WRITE)

PauseHook = Callable[[str], Awaitable[None]]

# The one process-wide hook; None in production.
_hook: PauseHook | None = None


def install_pause(hook: PauseHook | None) -> None:
    """Await ``hook(point)`` at every pause point from now on (None: remove it)."""
    global _hook  # noqa: PLW0603 - one process-wide test seam, off by default
    _hook = hook


async def pause_point(point: str) -> None:
    """Return at once unless a hook is installed; else whatever the hook waits for."""
    if _hook is not None:
        await _hook(point)
