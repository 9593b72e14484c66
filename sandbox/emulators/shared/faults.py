"""Fault-injection rules matched by HTTP method and path glob, each for N calls (pure).

Invariants: a rule fires at most ``count`` times (``None``: until cleared) and is dropped once
spent; of the error rules matching one request only the first fires (and is spent); every
matching shaping rule (latency, malformed body, empty or small pages) applies. Each emulator
names its own error kinds and turns a fired error rule into its provider's error envelope.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

# Faults that shape a response rather than replace it.
SHAPING_FAULTS = frozenset(
    {"latency", "malformed_json", "malformed_item", "empty_page", "page_size"}
)


@dataclass
class Fault:
    """One rule: which requests it matches, how often, and what it does to them."""

    id: int
    kind: str
    method: str = "*"
    path: str = "*"
    count: int | None = 1
    retry_after: str | None = None
    delay_s: float = 0.0
    page_size: int | None = None

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request."""
        return self.method in ("*", method.upper()) and fnmatch.fnmatchcase(path, self.path)


@dataclass
class Fired:
    """What the rules matching one request ask for."""

    error: Fault | None = None
    delay_s: float = 0.0
    malformed_json: bool = False
    malformed_item: bool = False
    empty_page: bool = False
    page_size: int | None = None


@dataclass
class FaultBook:
    """The active rules of one emulator; ``error_kinds`` are the kinds that answer an error."""

    error_kinds: frozenset[str]
    faults: list[Fault] = field(default_factory=list)
    _next_id: int = 1

    @classmethod
    def for_errors(cls, error_kinds: Iterable[str]) -> FaultBook:
        """A book accepting these error kinds plus the shaping ones."""
        return cls(frozenset(error_kinds))

    @property
    def kinds(self) -> frozenset[str]:
        """Every kind ``add`` accepts."""
        return self.error_kinds | SHAPING_FAULTS

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
        """Add a rule; ValueError for an unknown kind or a non-positive count."""
        if kind not in self.kinds:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(self.kinds)}")
        if count is not None and count < 1:
            raise ValueError("count must be positive or null")
        fault = Fault(
            self._next_id, kind, method.upper(), path, count, retry_after, delay_s, page_size
        )
        self._next_id += 1
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every rule."""
        self.faults.clear()

    def fire(self, method: str, path: str) -> Fired:
        """Consume one use of every matching rule (only the first error rule fires)."""
        fired = Fired()
        for fault in list(self.faults):
            if not fault.matches(method, path):
                continue
            if fault.kind in self.error_kinds:
                if fired.error is not None:
                    continue
                fired.error = fault
            elif fault.kind == "latency":
                fired.delay_s += fault.delay_s
            elif fault.kind == "malformed_json":
                fired.malformed_json = True
            elif fault.kind == "malformed_item":
                fired.malformed_item = True
            elif fault.kind == "empty_page":
                fired.empty_page = True
            else:
                fired.page_size = fault.page_size
            if fault.count is not None:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
        return fired


def break_first_item(body: bytes, list_key: str) -> bytes:
    """``body`` (a JSON list answer) with its first item's ``start`` no longer an object: one
    item off the documented shape, the rest of the page intact. Unchanged without items."""
    answer = json.loads(body)
    items = answer.get(list_key) if isinstance(answer, dict) else None
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        return body
    items[0] = {**items[0], "start": "not a time"}
    return json.dumps(answer).encode()
