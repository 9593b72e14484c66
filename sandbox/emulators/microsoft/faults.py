"""Graph's fault kinds and the error envelopes they answer with (providers.md B.3): a
``Retry-After`` passed through exactly as given (fractional values included), and on the identity
endpoints the OAuth error shape instead. The rule mechanics live in
``sandbox.emulators.shared.faults``.
"""

from __future__ import annotations

from sandbox.emulators.shared.faults import Fault, FaultBook

from .errors import GraphError, OAuthError

# kind -> (status, Graph code, Graph message, OAuth error, default Retry-After)
ERROR_FAULTS: dict[str, tuple[int, str, str, str, str | None]] = {
    "throttled": (429, "TooManyRequests", "Please retry again later.", "temporarily_unavailable",
                  "2.128"),
    "unavailable": (503, "serviceNotAvailable", "Service Unavailable",
                    "temporarily_unavailable", None),
    "server_error": (500, "generalException", "An unspecified error has occurred.",
                     "server_error", None),
    "gateway_timeout": (504, "UnknownError", "Gateway Timeout", "temporarily_unavailable", None),
}  # fmt: skip


def new_fault_book() -> FaultBook:
    """An empty book that knows Graph's error kinds."""
    return FaultBook.for_errors(ERROR_FAULTS)


def _retry_after(fault: Fault) -> dict[str, str]:
    default = ERROR_FAULTS[fault.kind][4]
    value = default if fault.retry_after is None else fault.retry_after
    # An explicit empty string means "no Retry-After header at all".
    return {"Retry-After": value} if value else {}


def graph_error(fault: Fault) -> GraphError:
    status, code, message, _, _ = ERROR_FAULTS[fault.kind]
    inner: dict[str, str] = {}
    if status == 429:
        inner = {"code": "429", "message": "Please retry after", "status": "429"}
    return GraphError(status, code, message, headers=_retry_after(fault), inner=inner)


def oauth_error(fault: Fault) -> OAuthError:
    status, _, message, error, _ = ERROR_FAULTS[fault.kind]
    return OAuthError(
        status, error, 90033 if status == 429 else 90010, message, headers=_retry_after(fault)
    )
