"""One error body for every failure: ``{"error": {"code": ..., "message": ...}}``.

Invariants:
- every non-2xx answer of the API has this shape, aiohttp's own 404/405/413 included (405
  keeps its ``Allow`` header);
- a validation failure is a 422 listing each field's location and problem, built from pydantic's
  loc/msg only: the input is never echoed;
- an unexpected error is a 500 with a fixed message (logged with its traceback); a dependency
  that is down (Postgres, Redis) is a 503.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError
from redis.exceptions import RedisError

from admin.models import ErrorBody, ErrorDetail, FieldProblem

log = structlog.get_logger("admin")

# The codes of aiohttp's own refusals.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
}
_DEPENDENCY_ERRORS = (RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class ApiError(Exception):
    """A refusal a handler raises: its status, code and message (safe to show)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(what: str) -> ApiError:
    """404 for an unknown resource."""
    return ApiError(404, "not_found", f"no such {what}")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: list[FieldProblem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The JSON error answer."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, fields=fields))
    return web.json_response(
        text=body.model_dump_json(exclude_none=True), status=status, headers=headers
    )


def field_problems(error: ValidationError, part: str) -> list[FieldProblem]:
    """Each invalid field of ``part`` (``body``, ``query``, ``path``), without its input."""
    problems = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in (part, *item["loc"]))
        problems.append(FieldProblem(location=loc, message=str(item["msg"])))
    return problems


def validation_failed(problems: list[FieldProblem]) -> web.Response:
    """422 listing the invalid fields."""
    return error_response(422, "invalid_request", "the request is invalid", fields=problems)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error body."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers=headers)
    except asyncpg.DataError:
        # A value our checks let through that Postgres cannot hold (a date out of its range):
        # the request's fault, never an outage.
        log.info("request value out of range", path=request.path)
        return error_response(422, "invalid_request", "a value in the request is out of range")
    except (TimeoutError, *_DEPENDENCY_ERRORS) as exc:
        transport = request.transport
        if transport is None or transport.is_closing():
            log.info("client went away", path=request.path, error=type(exc).__name__)
            return error_response(400, "client_gone", "the client closed the connection")
        log.warning("dependency unavailable", path=request.path, error=type(exc).__name__)
        return error_response(503, "unavailable", "a dependency is unavailable; retry later")
    except Exception:
        log.exception("unexpected error", path=request.path)
        return error_response(500, "internal", "internal error")
