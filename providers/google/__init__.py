"""Google Calendar v3 provider: client, mapping and a protocol emulator."""
