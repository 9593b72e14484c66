"""Google API error envelope: the one shape every emulator error takes (pure, no aiohttp).

Invariant: a body is always ``{"error": {"errors": [...], "code": N, "message": ...}}`` with the
top-level message equal to the first error's message.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the emulator answers with the Google envelope."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        headers: dict[str, str] | None = None,
        omit_reason: bool = False,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = headers or {}
        self.omit_reason = omit_reason

    def body(self) -> dict[str, Any]:
        """The JSON envelope."""
        detail: dict[str, Any] = {"domain": self.domain, "reason": self.reason}
        detail["message"] = self.message
        if self.location_type is not None:
            detail["locationType"] = self.location_type
        if self.location is not None:
            detail["location"] = self.location
        error: dict[str, Any] = {"code": self.status, "message": self.message}
        if not self.omit_reason:
            error = {"errors": [detail], **error}
        return {"error": error}


def bad_param(name: str, message: str, reason: str = "invalid") -> ApiError:
    """400 about one query parameter."""
    return ApiError(400, reason, message, location=name, location_type="parameter")


def not_found() -> ApiError:
    return ApiError(404, "notFound", "Not Found")


def deleted() -> ApiError:
    return ApiError(410, "deleted", "Resource has been deleted")


def full_sync_required(*, with_reason: bool = True) -> ApiError:
    """410 for a sync token that is no longer valid (providers.md A.3)."""
    return ApiError(
        410,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        domain="calendar",
        location="syncToken",
        location_type="parameter",
        omit_reason=not with_reason,
    )


def auth_error() -> ApiError:
    """401 for a missing, unknown or expired access token."""
    return ApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        headers={
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        },
    )
