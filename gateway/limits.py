"""Request body limits: refuse a body over the limit before reading it, and while reading it.

Invariant: at most ``max_bytes`` plus one network chunk of a body is ever held in memory, whether
or not the client sent a (truthful) Content-Length.
"""

from __future__ import annotations

from aiohttp import web

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: Graph batches are far smaller, Google sends no body


class BodyTooLarge(Exception):
    """The request body exceeds the limit (answer 413)."""


async def read_body(request: web.BaseRequest, max_bytes: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to exceed ``max_bytes``."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        # Checked per chunk: a chunked body or a lying Content-Length is cut off here.
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
