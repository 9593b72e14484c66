"""Both provider emulators in-process with real clients pointed at them (demo and tests).

Invariant: everything opened here (emulators, the HTTP session trusting the Microsoft
emulator's CA, the clients' refresh threads) is closed when the block exits, clients first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from providers.google.client import GoogleCalendarProvider
from providers.http import HttpSettings, create_session
from providers.interface import CalendarProvider
from providers.microsoft.client import MicrosoftCalendarProvider
from sandbox.emulators.google import GoogleEmulator
from sandbox.emulators.microsoft.server import MicrosoftEmulator

GRAPH_SCOPES = ("https://graph.microsoft.com/Calendars.ReadWrite",)


@dataclass(frozen=True, slots=True)
class EmulatedProviders:
    """The running emulators and a client for each, keyed by provider name."""

    google: GoogleEmulator
    microsoft: MicrosoftEmulator
    clients: dict[str, CalendarProvider]


@contextlib.asynccontextmanager
async def open_emulated_providers(client_id: str, secret: str) -> AsyncIterator[EmulatedProviders]:
    """Start both emulators with OAuth client ``client_id``, and real clients for them."""
    async with contextlib.AsyncExitStack() as stack:
        google = await stack.enter_async_context(GoogleEmulator("127.0.0.1", 0))
        microsoft = await stack.enter_async_context(MicrosoftEmulator("127.0.0.1", 0))
        google.control.add_client(client_id, secret)
        microsoft.control.add_client(client_id, secret)
        ca = Path(microsoft.ca_pem_path)
        http = await stack.enter_async_context(create_session(HttpSettings(ca_bundle=ca)))
        google_client = GoogleCalendarProvider(
            http,
            api_base_url=google.api_base_url,
            token_uri=google.token_uri,
            client_id=client_id,
            client_secret=secret,
        )
        stack.push_async_callback(google_client.aclose)
        microsoft_client = MicrosoftCalendarProvider(
            http,
            authority=microsoft.authority,
            graph_base_url=microsoft.graph_base_url,
            graph_beta_base_url=microsoft.graph_beta_base_url,
            client_id=client_id,
            client_secret=secret,
            scopes=list(GRAPH_SCOPES),
            ca_bundle=ca,
        )
        stack.push_async_callback(microsoft_client.aclose)
        clients: dict[str, CalendarProvider] = {
            "google": google_client,
            "microsoft": microsoft_client,
        }
        yield EmulatedProviders(google, microsoft, clients)
