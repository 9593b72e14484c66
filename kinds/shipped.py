"""The kinds this build ships, as a fresh registry."""

from __future__ import annotations

from kinds.calendar import register_calendar_kinds
from kinds.registry import KindRegistry


def default_registry() -> KindRegistry:
    """A fresh registry of the kinds this build ships (a caller may register more)."""
    registry = KindRegistry()
    register_calendar_kinds(registry)
    return registry
