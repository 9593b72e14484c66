"""The monitor's text views and shard rows: pure functions over frozen data, no loop."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from actors.cell import ErrorRecord
from actors.registry import ActorSnapshot, RegistryStatistics
from cluster.lease_state import LeasePolicy, LeaseState, LossReason, ShardLease
from store.accounts import Account
from store.credentials import CredentialInfo
from supervisor.actor_table import actor_detail, actors_table, shards_table, summary_line
from supervisor.monitor_accounts import AccountMetadata, CalendarInfo, ChannelInfo
from supervisor.monitor_shards import ShardsView, shard_rows

NOW = 1_800_000_000.0
AT = datetime.fromtimestamp(NOW, UTC)


def snapshot(actor_id: str = "a1", **fields: object) -> ActorSnapshot:
    values: dict[str, object] = {
        "id": actor_id,
        "kind": "account",
        "state": "idle",
        "status": "synced",
        "mailbox_depth": 0,
        "restarts": 0,
        "last_error": None,
        "last_traceback": None,
        "last_activity": NOW - 5,
        "next_wake_in_s": 30.0,
        "deadlines": (("poll", 30.0),),
        "task_name": f"actor[{actor_id}]",
        "provider": "google",
        "last_sync_at": NOW - 90,
    }
    values.update(fields)
    return ActorSnapshot(**values)  # type: ignore[arg-type]


def test_summary_then_a_page_with_every_column_and_a_footer() -> None:
    stats = RegistryStatistics(3, {"idle": 2, "busy": 1}, 4, 2, NOW)
    assert summary_line(stats) == "3 actors (busy 1, idle 2); restarts 4; queued messages 2"
    rows = [snapshot("a1"), snapshot("a2", provider=None, last_sync_at=None, next_wake_in_s=None)]
    text = actors_table(rows, total=120, offset=50, limit=50, now_wall=NOW)
    lines = text.splitlines()
    assert re.match(
        r"ID\s+KIND\s+STATE\s+STATUS\s+MAILBOX\s+RESTARTS\s+PROVIDER\s+LAST SYNC\s+NEXT$", lines[0]
    )
    assert re.match(r"a1\s+account\s+idle\s+synced\s+0\s+0\s+google\s+90s ago\s+in 30s$", lines[1])
    assert re.match(r"a2\s+account\s+idle\s+synced\s+0\s+0\s+-\s+-\s+-$", lines[2])
    assert lines[3].startswith("rows 51-52 of 120 (page 2 of 3;")
    whole = actors_table(rows, total=2, now_wall=NOW)
    assert len(whole.splitlines()) == 3  # no footer when everything is shown


def test_a_long_status_is_clipped_to_keep_the_table_readable() -> None:
    text = actors_table([snapshot(status="syncing " + "x" * 80)], total=1, now_wall=NOW)
    assert "x" * 40 not in text and "…" in text


def test_detail_shows_token_expiry_calendars_channels_and_recent_errors_newest_first() -> None:
    errors = (
        ErrorRecord(NOW - 300, "OSError: first", "Traceback\n  File a\nOSError: first\n"),
        ErrorRecord(NOW - 10, "KeyError: second", "Traceback\n  File b\nKeyError: second\n"),
    )
    snap = snapshot(last_error="KeyError: second", last_traceback="x", recent_errors=errors)
    account = Account(uuid.uuid4(), "google", "ada@example.com", 3, "active", None, AT, AT)
    meta = AccountMetadata(
        account,
        CredentialInfo("k1", True, AT + timedelta(minutes=50), ("calendar",), AT),
        (
            CalendarInfo("primary", "Ada", True, True, False, AT - timedelta(hours=3), None),
            CalendarInfo("team", "Team", True, False, True, None, None),
        ),
        (ChannelInfo("ch-1", "primary", AT + timedelta(days=6)),),
    )
    text = actor_detail(snap, meta, now_wall=NOW)
    assert "provider:      google" in text and "last sync:     90s ago" in text
    assert "access token expires in 3000s" in text
    assert re.search(r"^  primary\s+Ada\s+on\s+yes\s+3\.0h ago$", text, re.M)
    assert re.search(r"^  team\s+Team\s+on\s+mid-round\s+-$", text, re.M)
    assert re.search(r"^  ch-1\s+primary\s+in 144\.0h$", text, re.M)
    newest, oldest = text.index("KeyError: second\n    Traceback"), text.index("OSError: first")
    assert "recent errors (2, newest first):" in text and newest < oldest
    assert "    KeyError: second" in text


def test_detail_without_the_account_runtime_still_shows_the_last_traceback() -> None:
    text = actor_detail(snapshot(last_error="E: x", last_traceback="Traceback\nE: x"), now_wall=NOW)
    assert "last traceback:\n  Traceback\n  E: x" in text and "calendars" not in text


def test_shard_rows_show_held_and_lost_leases_with_time_left() -> None:
    policy = LeasePolicy(ttl_s=10.0)
    leases = {s: ShardLease(s, policy) for s in range(4)}
    leases[1].start_claim()
    leases[1].claimed(100.0)
    leases[2].start_claim()
    leases[2].claimed(100.0)
    leases[2].epoch_refused()
    leases[3].start_claim()
    rows = shard_rows(leases, {1: 7}, now=103.0)
    assert [(r.shard, r.state, r.epoch) for r in rows] == [
        (1, "owned", 7),
        (2, "lost", None),
        (3, "claiming", None),
    ]
    owned = rows[0]
    assert owned.lease_left_s is not None and abs(owned.lease_left_s - (9.9 - 3.0)) < 1e-9
    assert owned.stop_in_s is not None and abs(owned.stop_in_s - (policy.stop_after_s - 3)) < 1e-9
    assert rows[1].lost_reason == LossReason.EPOCH.value and rows[1].lease_left_s is None
    assert leases[0].state is LeaseState.STANDBY
    view = ShardsView("r1", ("r1", "r2"), 4, rows, 2, 0, 1, 0)
    text = shards_table(view)
    assert text.startswith("replica r1: 1 of 4 shards owned; members r1, r2")
    assert re.search(r"^1\s+owned\s+7\s+6\.9s\s+3\.6s$", text, re.M)
    assert re.search(r"^2\s+lost \(epoch\)\s+-\s+-\s+-$", text, re.M)
