"""The admin API's audit trail: one structured record per mutating call and per refused one.

Invariants:
- every POST, PUT, PATCH or DELETE, and every request answered 401 or 403, yields exactly one
  ``audit`` record (logger ``admin.audit``): method, route template, target (the path's
  parameters), outcome (the status sent) and the caller (``sha256:`` and the first 12 hex of
  the token's hash: the prefix of the entry in ``IW_API_TOKEN_HASHES`` that let it in, never
  the token) or ``anonymous``;
- every refusal (status 401 or 403) is counted in ``api_refusals_total``;
- the middleware sits outside the error handler, so it records the status the client got.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from admin.auth import presented_hash
from metrics import events as metrics

log = structlog.get_logger("admin.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSALS = frozenset({401, 403})
FINGERPRINT_HEX = 12


def caller_of(authorization: str | None) -> str:
    """Who made the call, safe to log: a prefix of the token's configured hash."""
    digest = presented_hash(authorization)
    return "anonymous" if digest is None else "sha256:" + digest[:FINGERPRINT_HEX]


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record mutating and refused calls (module docstring)."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if status in REFUSALS:
            metrics.api_refusals.labels(str(status)).inc()
        if request.method in MUTATING or status in REFUSALS:
            route = request.match_info.route.resource
            log.info(
                "audit",
                method=request.method,
                route=route.canonical if route is not None else request.path[:200],
                target=dict(request.match_info),
                outcome=status,
                caller=caller_of(request.headers.get("Authorization")),
            )
