"""Microsoft Graph (Outlook calendar): client, token refresh (msal), pure JSON mapping, the
delta cursor, webhook notifications and time zone names. The emulator is
``sandbox.emulators.microsoft``."""
