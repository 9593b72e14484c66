"""The shared state every route handler reaches through the aiohttp application.

Invariant: one Backend per emulator; handlers hold no state of their own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiohttp import web

from sandbox.emulators.shared.clock import Clock
from sandbox.emulators.shared.faults import FaultBook

from .delta import DeltaEngine
from .faults import new_fault_book
from .identity import DEFAULT_TENANT, Directory
from .store import Store
from .subscriptions import SubscriptionHub


@dataclass
class Backend:
    clock: Clock
    directory: Directory
    store: Store
    delta: DeltaEngine
    hub: SubscriptionHub
    faults: FaultBook = field(default_factory=new_fault_book)
    state_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    origin: str = ""  # https://127.0.0.1:PORT
    default_page_size: int = 10
    max_page_size: int = 1000
    location_on_410: bool = True
    tenant_id: str = DEFAULT_TENANT


BACKEND = web.AppKey("microsoft_emulator_backend", Backend)
