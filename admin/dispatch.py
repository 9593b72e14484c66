"""Binds a route to aiohttp: validate path, query and body with the route's models, call the
handler, answer its model as JSON with the route's status.

Invariants: a handler runs only on input that validated (else one 422 lists every problem);
its answer is serialized by its declared model, so it matches the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ValidationError

from admin.context import Call, Deps, Route
from admin.errors import ApiError, field_problems, validation_failed
from admin.models import FieldProblem
from metrics import events as metrics


def _validate(
    model: type[BaseModel] | None,
    values: Mapping[str, str],
    part: str,
    problems: list[FieldProblem],
) -> BaseModel | None:
    if model is None:
        return None
    try:
        return model.model_validate(dict(values))
    except ValidationError as error:
        problems.extend(field_problems(error, part))
        return None


def bind(route: Route, deps: Deps) -> Handler:
    """The aiohttp handler serving ``route``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        problems: list[FieldProblem] = []
        path = _validate(route.path_params, request.match_info, "path", problems)
        # The first value of a repeated query parameter counts.
        query_values = {key: request.query[key] for key in request.query}
        query = _validate(route.query, query_values, "query", problems)
        if route.query is None and query_values:
            problems.append(FieldProblem(location="query", message="takes no parameters"))
        body = None
        if route.body is not None:
            try:  # over client_max_size: aiohttp's 413; too slow: 408, and the connection closed
                async with asyncio.timeout(deps.settings.http_request_timeout_s):
                    raw = await request.read()
            except TimeoutError:
                metrics.http_requests_shed.labels("api", "slow_body").inc()
                raise ApiError(408, "request_timeout", "the request body came too slowly") from None
            try:
                body = route.body.model_validate_json(raw)
            except ValidationError as error:
                problems.extend(field_problems(error, "body"))
        if problems:
            return validation_failed(problems)
        result = await route.handler(deps, Call(path=path, query=query, body=body))
        if route.response is None or result is None:
            return web.Response(status=route.status)
        return web.json_response(text=result.model_dump_json(), status=route.status)

    handle.__name__ = route.operation_id
    return handle
