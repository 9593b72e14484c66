"""Channel renewals lose nothing: with short granted lifetimes (Google may grant an expiration
earlier than asked) and every message delivered 1-3 s late, messages sent on a channel just
before it was replaced reach the gateway after the replacement.

Before: the replaced channel's row was deleted at once, the gateway answered its late messages
404 (``unknown_channel``), Google does not resend after a 4xx, and renewal ran no catch-up
round: 13 of 122 messages were refused and 2 edits stayed missing until the 15-minute poll.

Here the real pipeline runs in one process (``sandbox.harness.pipeline``), polling off, so only
notifications start syncs; the Google emulator grants 4 s channels (renewed every 2 s) and
delays each delivery 1-3 s while a user edits for 12 s.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sandbox.embedded import Services
from sandbox.harness.pipeline import open_pipeline, wait_until
from store.db import PgPool

EDITS = 40
LIFETIME_S = 4.0


async def test_renewals_under_delayed_delivery_refuse_nothing_and_lose_nothing(
    database_url: str, services: Services, pool: PgPool
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    async with open_pipeline(database_url, services.redis_url, pool) as pipeline:
        control = pipeline.control("google")
        control.grant_channel_lifetime(LIFETIME_S)
        ada = await pipeline.add_person("google", "ada@example.com")
        await wait_until(pipeline.watching, "the account to sync and watch")
        control.delay_notifications(1.0, 3.0)
        ids: list[str] = []
        for i in range(EDITS):
            if i % 3 == 2 and ids:
                control.update_event(ada.email, ids[-1], {"summary": f"renamed {i}"})
            else:
                body = {
                    "summary": f"edit {i}",
                    "start": {"dateTime": (start + timedelta(hours=i)).isoformat()},
                    "end": {"dateTime": (start + timedelta(hours=i, minutes=30)).isoformat()},
                }
                ids.append(str(control.create_event(ada.email, body)["id"]))
            await asyncio.sleep(0.3)  # the pace of the user's edits, not a wait for an outcome
        renewed = {d["channel_id"] for d in control.deliveries()}
        assert len(renewed) >= 4, f"too few renewals to prove anything: {renewed}"
        control.grant_channel_lifetime(None)  # the next renewal is the last for a while
        await pipeline.settle(quiet_s=3.5, timeout_s=60.0)  # past the longest delivery delay
        assert await pipeline.differences() == []
        refused = dict(pipeline.gateway.rejected)
        assert refused == {}, refused  # no message answered 4xx
        failed = [d for d in control.deliveries() if d["outcome"] != "delivered"]
        assert failed == []
