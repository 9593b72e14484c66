"""Provider emulators that follow the providers' documentation (../shared/providers.md): real
HTTP servers on loopback with fault injection and a control API.

- ``shared``: the controllable clock, fault rules, tokens and the authorization-code grant;
- ``google``: Google Calendar API v3 and Google's OAuth endpoints;
- ``microsoft``: the Microsoft identity platform and Microsoft Graph (Outlook calendar).
"""
