"""Google's fault kinds and the error envelopes they answer with (providers.md A.5); the rule
mechanics live in ``sandbox.emulators.shared.faults``."""

from __future__ import annotations

from sandbox.emulators.shared.faults import Fault, FaultBook

from .errors import ApiError

# kind -> (status, domain, reason, message)
ERROR_FAULTS: dict[str, tuple[int, str, str, str]] = {
    "rate_limit": (403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "user_rate_limit": (403, "usageLimits", "userRateLimitExceeded", "User Rate Limit Exceeded"),
    "rate_limit_429": (429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "quota_exceeded": (403, "usageLimits", "quotaExceeded", "Calendar usage limits exceeded."),
    "backend_error": (500, "global", "backendError", "Backend Error"),
    "unavailable": (503, "global", "backendError", "The service is currently unavailable."),
}


def new_fault_book() -> FaultBook:
    """An empty book that knows Google's error kinds."""
    return FaultBook.for_errors(ERROR_FAULTS)


def api_error(fault: Fault) -> ApiError:
    """The API error a fired error rule answers with."""
    status, domain, reason, message = ERROR_FAULTS[fault.kind]
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    return ApiError(status, reason, message, domain=domain, headers=headers)
