"""Fault injection rules matched by HTTP method and path glob, each for N calls (pure).

Invariants: a rule fires at most ``count`` times (``None``: until cleared) and is dropped once
spent; error faults produce the documented Graph envelopes (providers.md B.3), with a
``Retry-After`` header passed through exactly as given (fractional values included); on the
identity endpoints the same kinds answer in the OAuth error shape instead.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .errors import GraphError, OAuthError

# kind -> (status, Graph code, Graph message, OAuth error, default Retry-After)
ERROR_FAULTS: dict[str, tuple[int, str, str, str, str | None]] = {
    "throttled": (429, "TooManyRequests", "Please retry again later.", "temporarily_unavailable",
                  "2.128"),
    "unavailable": (503, "serviceNotAvailable", "Service Unavailable",
                    "temporarily_unavailable", None),
    "server_error": (500, "generalException", "An unspecified error has occurred.",
                     "server_error", None),
    "gateway_timeout": (504, "UnknownError", "Gateway Timeout", "temporarily_unavailable", None),
}  # fmt: skip
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

    def _retry_after(self) -> dict[str, str]:
        default = ERROR_FAULTS[self.kind][4]
        value = default if self.retry_after is None else self.retry_after
        # An explicit empty string means "no Retry-After header at all".
        return {"Retry-After": value} if value else {}

    def graph_error(self) -> GraphError:
        status, code, message, _, _ = ERROR_FAULTS[self.kind]
        inner: dict[str, str] = {}
        if status == 429:
            inner = {"code": "429", "message": "Please retry after", "status": "429"}
        return GraphError(status, code, message, headers=self._retry_after(), inner=inner)

    def oauth_error(self) -> OAuthError:
        status, _, message, error, _ = ERROR_FAULTS[self.kind]
        return OAuthError(
            status, error, 90033 if status == 429 else 90010, message, headers=self._retry_after()
        )


@dataclass
class Fired:
    """What the faults matching one request ask for."""

    error: Fault | None = None
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
                fired.error = fault
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
