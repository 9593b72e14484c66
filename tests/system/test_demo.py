"""The live demo end to end: emulators, gateway, replica and account actors in one process,
real Postgres and Redis. Edits reach Postgres through push notifications (actors poll only every
15 minutes); with faults injected (429, 5xx, an expired sync token, a revoked refresh token, a
crashed actor) the pipeline recovers; and at the end the database matches a fresh listing from
every emulator."""

from __future__ import annotations

import base64
import io
import time

from redis.asyncio import Redis

from config.settings import Settings, load_settings
from sandbox.demo import run_demo
from sandbox.demo.schedule import FAULT_KINDS
from sandbox.embedded import Services
from store.accounts import get_account
from store.crypto import generate_key
from store.db import PgPool
from supervisor.services import ServiceUrls


def demo_settings(database_url: str, services: Services) -> Settings:
    return load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        monitor_enabled=False,
        ops_port=0,  # any free port: the demo says which
        replica_id="live-demo-test",
        encryption_keys={"k": base64.urlsafe_b64encode(generate_key()).decode()},
        encryption_key_id="k",
    )


async def test_live_demo_converges_through_push(
    database_url: str, services: Services, redis: Redis
) -> None:
    # ``redis`` is asked for to empty Redis first: no streams or groups of other tests.
    settings = demo_settings(database_url, services)
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    out = io.StringIO()
    started = time.monotonic()
    summary = await run_demo(
        settings,
        urls,
        accounts=6,
        duration_s=6,
        edits_per_s=5,
        fault_rate=0,
        out=out,
        events_per_account=30,
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
    assert summary.faults == {} and summary.restarts == 0  # fault_rate 0: none injected
    assert "\x1b" not in text  # not a terminal: plain lines
    assert "metrics: http://127.0.0.1:" in text  # the replica's ops server runs beside it
    assert elapsed < 40, text


async def test_live_demo_with_every_fault_kind_still_matches(
    database_url: str, services: Services, redis: Redis, pool: PgPool
) -> None:
    settings = demo_settings(database_url, services)
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    out = io.StringIO()
    summary = await run_demo(
        settings,
        urls,
        accounts=8,
        duration_s=8,
        edits_per_s=5,
        fault_rate=0.3,  # 1.5 faults/s: each kind within the first ~4 s (seeded schedule)
        out=out,
        events_per_account=20,
        seed=7,
        reauth_after_s=1.0,
    )
    text = out.getvalue()
    for kind in FAULT_KINDS:
        assert summary.faults.get(kind, 0) >= 1, (kind, text)
    assert summary.restarts >= summary.faults["crash"] >= 1, text  # crashed, then restarted
    assert summary.revoked and summary.reauthorized == len(summary.revoked), text
    for account_id in summary.revoked:
        account = await get_account(pool, account_id)
        assert account is not None and account.status == "active", text
    assert summary.all_matched, text  # revoked ones included: every account matched
    assert "database matches the emulators: yes (8/8 accounts)" in text
    assert "\x1b" not in text
