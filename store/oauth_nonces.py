"""Single use of the connect flow's start tokens: each nonce is spent once, kept until the
token it came with would have expired (``oauth_start_nonces``)."""

from __future__ import annotations

from datetime import datetime

from store.db import Queryable


async def spend_nonce(conn: Queryable, nonce: str, expires_at: datetime) -> bool:
    """Record ``nonce`` as spent; False when it was spent before. Expired nonces go first
    (their tokens are refused as expired anyway)."""
    await conn.execute("DELETE FROM oauth_start_nonces WHERE expires_at < now()")
    spent = await conn.fetchval(
        "INSERT INTO oauth_start_nonces (nonce, expires_at) VALUES ($1, $2)"
        " ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
        nonce,
        expires_at,
    )
    return spent is not None
