"""Unit tests run on pure code: no server, no event loop. Both are refused here, so a test that
needs one fails at once with where it belongs instead of slowing ``make test-fast`` down."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def services() -> Iterator[None]:
    """Shadows the real servers of tests/conftest.py for every unit test."""
    pytest.fail("a unit test asked for Postgres/Redis: it belongs in tests/integration")
    yield


@pytest.fixture(autouse=True)
def _no_event_loop(request: pytest.FixtureRequest) -> None:
    if inspect.iscoroutinefunction(request.function):
        pytest.fail("a unit test is a coroutine: it belongs in tests/integration")
