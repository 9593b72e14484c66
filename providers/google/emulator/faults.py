"""Fault injection rules matched by HTTP method and path glob, each for N calls (pure).

Invariants: a rule fires at most ``count`` times (``None``: until cleared) and is dropped once
spent; error faults produce exactly the Google envelopes of providers.md A.5.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .errors import ApiError

# kind -> (status, domain, reason, message)
ERROR_FAULTS: dict[str, tuple[int, str, str, str]] = {
    "rate_limit": (403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "user_rate_limit": (403, "usageLimits", "userRateLimitExceeded", "User Rate Limit Exceeded"),
    "rate_limit_429": (429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "quota_exceeded": (403, "usageLimits", "quotaExceeded", "Calendar usage limits exceeded."),
    "backend_error": (500, "global", "backendError", "Backend Error"),
    "unavailable": (503, "global", "backendError", "The service is currently unavailable."),
}
# Faults that shape a response rather than replace it.
SHAPING_FAULTS = frozenset({"latency", "malformed_json", "empty_page", "page_size"})
FAULT_KINDS = frozenset(ERROR_FAULTS) | SHAPING_FAULTS


@dataclass
class Fault:
    id: int
    kind: str
    method: str = "*"
    path: str = "*"
    count: int | None = 1
    retry_after: str | None = None
    delay_s: float = 0.0
    page_size: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and fnmatch.fnmatchcase(path, self.path)

    def error(self) -> ApiError:
        """The API error an error fault answers with."""
        status, domain, reason, message = ERROR_FAULTS[self.kind]
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        return ApiError(status, reason, message, domain=domain, headers=headers)


@dataclass
class Fired:
    """What the faults matching one request ask for."""

    error: ApiError | None = None
    delay_s: float = 0.0
    malformed_json: bool = False
    empty_page: bool = False
    page_size: int | None = None


@dataclass
class FaultBook:
    faults: list[Fault] = field(default_factory=list)
    _next_id: int = 1

    def add(
        self,
        kind: str,
        *,
        method: str = "*",
        path: str = "*",
        count: int | None = 1,
        retry_after: str | None = None,
        delay_s: float = 0.0,
        page_size: int | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        if count is not None and count < 1:
            raise ValueError("count must be positive or null")
        fault = Fault(
            self._next_id, kind, method.upper(), path, count, retry_after, delay_s, page_size
        )
        self._next_id += 1
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def fire(self, method: str, path: str) -> Fired:
        """Consume one use of every matching rule (only the first error rule fires)."""
        fired = Fired()
        for fault in list(self.faults):
            if not fault.matches(method, path):
                continue
            if fault.kind in ERROR_FAULTS:
                if fired.error is not None:
                    continue
                fired.error = fault.error()
            elif fault.kind == "latency":
                fired.delay_s += fault.delay_s
            elif fault.kind == "malformed_json":
                fired.malformed_json = True
            elif fault.kind == "empty_page":
                fired.empty_page = True
            else:
                fired.page_size = fault.page_size
            if fault.count is not None:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
        return fired
