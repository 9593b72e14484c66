"""The live demo end to end: emulators, gateway, replica and account actors in one process,
real Postgres and Redis. Edits reach Postgres through push notifications (actors poll only every
15 minutes), and at the end the database matches a fresh listing from every emulator."""

from __future__ import annotations

import base64
import io
import time

from redis.asyncio import Redis

from config.settings import load_settings
from store.crypto import generate_key
from store.embedded import Services
from supervisor.demo import run_demo
from supervisor.services import ServiceUrls


async def test_live_demo_converges_through_push(
    database_url: str, services: Services, redis: Redis
) -> None:
    # ``redis`` is asked for to empty Redis first: no streams or groups of other tests.
    settings = load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        monitor_enabled=False,
        replica_id="live-demo-test",
        encryption_keys={"k": base64.urlsafe_b64encode(generate_key()).decode()},
        encryption_key_id="k",
    )
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    out = io.StringIO()
    started = time.monotonic()
    summary = await run_demo(
        settings, urls, accounts=6, duration_s=6, edits_per_s=5, fault_rate=0, out=out
    )
    elapsed = time.monotonic() - started
    text = out.getvalue()
    assert summary.accounts == 6
    assert summary.all_matched, text
    assert "database matches the emulators: yes" in text
    assert summary.edits > 0
    assert summary.changes > 0
    assert summary.notifications > 0  # push, not polling, drove the syncs
    assert summary.lag_p50_ms is not None and summary.lag_p99_ms is not None
    assert summary.lag_samples > 0
    assert "\x1b" not in text  # not a terminal: plain lines
    assert elapsed < 40, text
