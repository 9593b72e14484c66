"""An emulator of the Microsoft identity platform and Microsoft Graph v1.0/beta (Outlook calendar)
over HTTPS on loopback, following the documented protocol (see ``../shared/providers.md`` B)."""

from .server import MicrosoftEmulator, serve

__all__ = ["MicrosoftEmulator", "serve"]
