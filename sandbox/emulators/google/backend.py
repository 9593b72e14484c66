"""The shared state every route handler reaches through the aiohttp application.

Invariant: one Backend per emulator; handlers hold no state of their own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web

from sandbox.emulators.shared.authorization import Authorizations
from sandbox.emulators.shared.faults import FaultBook

from .faults import new_fault_book
from .push import PushHub
from .store import Store


@dataclass
class Backend:
    store: Store
    hub: PushHub
    faults: FaultBook = field(default_factory=new_fault_book)
    token_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sync_token_max_age: timedelta | None = None
    api_base_url: str = ""
    authorizations: Authorizations = field(default_factory=Authorizations)


BACKEND = web.AppKey("google_emulator_backend", Backend)
