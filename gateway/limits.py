"""Request body limits: refuse a body over the limit before reading it, and while reading it;
bound how long reading it may take and how many bodies are read at once.

Invariants:
- at most ``max_bytes`` plus one network chunk of a body is ever held in memory, whether or not
  the client sent a (truthful) Content-Length;
- a body not complete ``deadline_s`` after its reading began is abandoned (``BodyTooSlow``);
- ``BodyBudget`` admits at most its limit of bodies being read at once, so stalled uploads
  cannot hold more than limit x max_bytes.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: Graph batches are far smaller, Google sends no body


class BodyTooLarge(Exception):
    """The request body exceeds the limit (answer 413)."""


class BodyTooSlow(Exception):
    """The request body did not arrive within its deadline (answer 408, close)."""


class TooManyBodies(Exception):
    """As many bodies as allowed are being read already (answer 503: retried later)."""


class BodyBudget:
    """How many request bodies are being read at once, at most ``limit``."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.in_flight = 0

    async def read(self, request: web.BaseRequest, max_bytes: int, deadline_s: float) -> bytes:
        """``read_body`` within the budget: ``TooManyBodies`` when it is spent."""
        if self.in_flight >= self.limit:
            raise TooManyBodies
        self.in_flight += 1
        try:
            return await read_body(request, max_bytes, deadline_s=deadline_s)
        finally:
            self.in_flight -= 1


async def read_body(
    request: web.BaseRequest, max_bytes: int, *, deadline_s: float | None = None
) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to exceed ``max_bytes``, or
    BodyTooSlow when it is not complete within ``deadline_s``."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                # Checked per chunk: a chunked body or a lying Content-Length is cut off here.
                if size > max_bytes:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)
