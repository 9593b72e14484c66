"""The benchmarks run end to end and report every figure they promise (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

import orjson

REQUIRED = {
    "bytes_per_actor",
    "baseline_bytes_per_task",
    "spawn_s",
    "baseline_spawn_s",
    "msgs_per_s",
    "baseline_msgs_per_s",
}


def test_bench_prints_one_json_object_of_figures() -> None:
    args = ["--actors", "300", "--messages", "3000", "--throughput-actors", "30", "--repeat", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.actors", *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = out.stdout.strip().splitlines()
    figures = orjson.loads(line)
    assert figures.keys() >= REQUIRED
    assert figures["actors"] == 300 and figures["messages"] == 3000
    assert all(figures[key] > 0 for key in REQUIRED)


SYNC_REQUIRED = {
    "webhook_commit_p50_ms",
    "webhook_commit_p99_ms",
    "webhook_edits",
    "webhook_samples",
    "webhook_notifications",
    "ingest_events_per_s",
    "copy_events_per_s",
    "ingest_ratio",
    "coalesce_notifications",
}


def test_sync_bench_prints_one_json_object_of_figures() -> None:
    args = ["--accounts", "20", "--edits-per-s", "20", "--duration-s", "2"]
    args += ["--ingest-events", "2000", "--ingest-repeat", "1", "--notifications", "20"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.sync", *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = out.stdout.strip().splitlines()
    figures = orjson.loads(line)
    assert figures.keys() >= SYNC_REQUIRED | {"coalesce_list_calls", "coalesce_committed"}
    assert figures["webhook_accounts"] == 20 and figures["ingest_events"] == 2000
    assert all(figures[key] > 0 for key in SYNC_REQUIRED)
    assert 1 <= figures["coalesce_list_calls"] <= 2
    assert figures["coalesce_committed"] is True


FAILOVER_REQUIRED = {
    "failover_s",
    "failover_claimed_s",
    "lease_ttl_s",
    "orphaned_shards",
    "orphaned_accounts",
    "shards_moved_on_join",
    "join_balance",
    "notifications_lost",
    "notifications_appended",
    "edits_not_stored",
}


def test_failover_bench_prints_one_json_object_of_figures() -> None:
    args = ["--accounts", "40", "--replicas", "2", "--shards", "16", "--lease-ttl-s", "2"]
    args += ["--edit-accounts", "10", "--settle-s", "45"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.failover", *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = out.stdout.strip().splitlines()
    figures = orjson.loads(line)
    assert figures.keys() >= FAILOVER_REQUIRED
    assert figures["accounts"] == 40 and figures["replicas"] == 2 and figures["shards"] == 16
    assert figures["lease_ttl_s"] == 2.0
    assert figures["orphaned_shards"] > 0 and figures["shards_moved_on_join"] > 0
    assert figures["notifications_appended"] > 0  # notifications flowed through the kill
    assert figures["notifications_lost"] == 0  # and every one was acknowledged by a replica
