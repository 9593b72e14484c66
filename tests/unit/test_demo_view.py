"""The demo's live view: the rich panel shows the figures, the plain fallback has no escapes,
and accounts are shown in the state their actor is in."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from sandbox.demo.status import account_state
from sandbox.demo.view import Figures, open_view, plain_line, render

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

FIGURES = Figures(
    phase="running",
    elapsed_s=42.0,
    accounts=200,
    states={"synced": 190, "syncing": 4, "retrying": 3, "needs_reauth": 1, "restarting": 2},
    notifications=1234,
    notifications_per_s=5.5,
    delivered=1230,
    delivered_per_s=5.25,
    edits=250,
    lag_p50_ms=87.4,
    lag_p99_ms=1912.0,
    lag_samples=240,
    changes=245,
    published=241,
    events=50321,
    restarts=3,
    faults={"crash": 3, "throttled": 2, "revoked": 1},
    errors={"gateway unknown_channel": 100},
    actor_summary="200 actors (idle 200); restarts 3; queued messages 0",
)


def terminal(width: int = 160) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, color_system="standard"), buffer


def test_the_panel_shows_every_figure() -> None:
    console, buffer = terminal()
    console.print(render(FIGURES))
    raw = buffer.getvalue()
    assert "\x1b[" in raw  # a terminal: styled
    text = ANSI.sub("", raw)
    assert "running (42s)" in text
    for state, count in FIGURES.states.items():
        assert re.search(rf"{state}\s+{count}\b", text), state
    assert re.search(r"total\s+200\b", text)
    assert re.search(r"notifications/s\s+5\.5 \(1234 total\)", text)
    assert re.search(r"delivered/s\s+5\.2 \(1230 total\)", text)
    assert re.search(r"edits\s+250\b", text)
    assert re.search(r"lag p50\s+87ms", text)
    assert re.search(r"lag p99\s+1912ms", text)
    assert re.search(r"changes\s+245 \(241 published\)", text)
    assert re.search(r"injected crash\s+3\b", text)
    assert re.search(r"injected throttled\s+2\b", text)
    assert re.search(r"injected revoked\s+1\b", text)
    assert re.search(r"gateway unknown_channel\s+100\b", text)
    assert re.search(r"actor restarts\s+3\b", text)
    # States in a fixed order, synced first.
    assert text.index("synced") < text.index("syncing") < text.index("needs_reauth")


def test_a_terminal_view_redraws_in_place_and_keeps_said_lines() -> None:
    console, buffer = terminal()
    with open_view(io.StringIO(), console=console) as view:
        assert view.interactive
        view.show(FIGURES)
        view.say("all 200 accounts synced and watching")
        view.show(Figures(phase="settling", elapsed_s=50.0, accounts=200, edits=260))
        view.freeze()
        view.say("database matches the emulators: yes (200/200 accounts)")
    text = ANSI.sub("", buffer.getvalue())
    assert "all 200 accounts synced and watching" in text
    assert "settling (50s)" in text
    # Frozen: the last panel stays and the verdict comes after it.
    assert text.rindex("settling (50s)") < text.index("database matches the emulators")
    assert "\x1b[" in buffer.getvalue()  # cursor movements of the live redraw


def test_off_a_terminal_plain_lines_without_escapes() -> None:
    out = io.StringIO()
    with open_view(out, plain_every_s=60.0) as view:
        assert not view.interactive
        view.show(FIGURES)
        view.show(FIGURES)  # within plain_every_s: not repeated
        view.say("database matches the emulators: yes (200/200 accounts)")
        view.show(FIGURES, force=True)
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0] == plain_line(FIGURES)
    assert "200 actors (idle 200)" in lines[0]
    assert "notifications 1234 (5.5/s)" in lines[0]
    assert "lag p50 87ms p99 1912ms" in lines[0]
    assert "faults crash 3, revoked 1, throttled 2" in lines[0]


@pytest.mark.parametrize(
    ("state", "status", "shown"),
    [
        ("idle", "synced", "synced"),
        ("busy", "syncing primary", "syncing"),
        ("idle", "retry in 4s (throttled)", "retrying"),
        ("idle", "needs_reauth", "needs_reauth"),
        ("idle", "parked (disabled)", "parked"),
        ("backoff", "syncing primary", "restarting"),
        ("held", None, "restarting"),
        ("quarantined", "synced", "quarantined"),
        ("starting", None, "starting"),
        ("busy", None, "starting"),
        ("stopped", "stale epoch", "stopped"),
    ],
)
def test_account_state_from_actor_state_and_status(
    state: str, status: str | None, shown: str
) -> None:
    assert account_state(state, status) == shown
