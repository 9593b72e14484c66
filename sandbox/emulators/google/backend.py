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
    # Per-user quotas (email -> requests per window) and every authenticated API call, for
    # tests: (monotonic time, email, method, path, refused by the quota).
    quotas: dict[str, UserQuota] = field(default_factory=dict)
    calls: list[ApiCall] = field(default_factory=list)


@dataclass
class UserQuota:
    """Google's per-user rate limit as it answers it: past ``requests`` within ``window_s``,
    403 ``userRateLimitExceeded`` without Retry-After (the errors guide: back off
    exponentially)."""

    requests: int
    window_s: float
    recent: list[float] = field(default_factory=list)

    def admit(self, now: float) -> bool:
        """Count a request at ``now`` (monotonic); False when it is over the quota."""
        self.recent = [t for t in self.recent if t > now - self.window_s]
        if len(self.recent) >= self.requests:
            return False
        self.recent.append(now)
        return True


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One authenticated API request."""

    at: float
    email: str
    method: str
    path: str
    refused: bool


BACKEND = web.AppKey("google_emulator_backend", Backend)
