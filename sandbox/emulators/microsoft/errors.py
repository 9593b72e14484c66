"""Error shapes: the Graph envelope and the Entra (OAuth 2.0) token-endpoint error (pure).

Invariants: every Graph error body is ``{"error": {"code", "message", "innerError": {"date",
"request-id", "client-request-id"}}}`` (plus documented extras such as the 429 inner code);
every identity error body is ``{"error", "error_description", "error_codes", "timestamp",
"trace_id", "correlation_id", ...}`` with the description prefixed ``AADSTS<code>:``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from .times import inner_date


class GraphError(Exception):
    """An error the Graph endpoints answer with the documented envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        inner: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.inner = inner or {}

    def body(self, request_id: str, client_request_id: str, now: datetime) -> dict[str, Any]:
        inner = {
            "date": inner_date(now),
            "request-id": request_id,
            "client-request-id": client_request_id,
            **self.inner,
        }
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


class OAuthError(Exception):
    """A token-endpoint failure in the Entra shape (``error_codes`` carry AADSTS numbers)."""

    def __init__(
        self,
        status: int,
        error: str,
        aadsts: int,
        description: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: AADSTS{aadsts}")
        self.status, self.error, self.aadsts = status, error, aadsts
        self.description = description
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, correlation_id: str | None, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        trace_id = str(uuid.uuid4())
        correlation = correlation_id or str(uuid.uuid4())
        stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace_id} "
            f"Correlation ID: {correlation} Timestamp: {stamp}"
        )
        return {
            "error": self.error,
            "error_description": description,
            "error_codes": [self.aadsts],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
            **self.extra,
        }


def not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def unsupported_segment(segment: str) -> GraphError:
    """What Graph answers for a path segment the version does not offer."""
    return GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def invalid_token(message: str, www_authenticate: str) -> GraphError:
    """401 for a missing, unknown, revoked or expired access token."""
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={"WWW-Authenticate": www_authenticate},
    )


def sync_state_not_found(code: str, message: str, location: str | None) -> GraphError:
    """410 Gone for a delta or skip token the server no longer has (providers.md B.1)."""
    return GraphError(410, code, message, headers={"Location": location} if location else None)


def etag_mismatch() -> GraphError:
    return GraphError(
        412,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed in "
        "the request does not match the current change key for the item.",
    )
