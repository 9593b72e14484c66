"""Google Calendar API v3 and OAuth token endpoint emulator (real aiohttp server on loopback)."""

from sandbox.emulators.shared.clock import Clock

from .control import Control
from .server import GoogleEmulator, serve

__all__ = ["Clock", "Control", "GoogleEmulator", "serve"]
