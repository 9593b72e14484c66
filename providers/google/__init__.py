"""Google Calendar API v3: client, OAuth refresh (google-auth), pure JSON mapping, the sync
cursor and push notifications. The emulator is ``sandbox.emulators.google``."""
