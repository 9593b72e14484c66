"""Microsoft Graph (Outlook calendar) provider: client, auth, mapping, notifications, emulator."""
