"""Google Calendar API v3 and OAuth token endpoint emulator (real aiohttp server on loopback)."""

from .control import Control
from .server import GoogleEmulator, serve
from .store import Clock

__all__ = ["Clock", "Control", "GoogleEmulator", "serve"]
