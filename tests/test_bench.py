"""The actor benchmark runs end to end and reports every figure it promises (no timing asserted)."""

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
