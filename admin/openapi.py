"""The OpenAPI 3.1 document of a route table: pure, schemas from the handlers' own models.

Invariants:
- every operation of the table and nothing else is described, at the table's path and method;
- schemas come from pydantic (``models_json_schema``), with ``$defs`` moved to
  ``components/schemas`` and referenced there; requests in validation mode, answers in
  serialization mode;
- parameters are the fields of the route's path and query models; an optional parameter's
  schema is its value's (absence is how it is left out, never ``null``);
- every error answer has the ``ErrorBody`` schema; the bearer scheme applies to every
  operation but the public ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from admin.context import Route
from admin.models import ErrorBody

REF_PREFIX = "#/components/schemas/"
SECURITY_SCHEME = "bearerAuth"

_ERROR_TEXT = {
    401: "missing or wrong bearer token",
    404: "unknown resource",
    409: "refused in the resource's current state",
    408: "the request body did not arrive in time (IW_HTTP_REQUEST_TIMEOUT_S)",
    413: "request body too large",
    422: "invalid input (the fields are listed)",
    503: "a dependency (Postgres, Redis) is unavailable",
}


def _models(routes: Sequence[Route]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for route in routes:
        for model in (route.path_params, route.query, route.body):
            if model is not None:
                wanted.append((model, "validation"))
        if route.response is not None:
            wanted.append((route.response, "serialization"))
    return list(dict.fromkeys(wanted))


def _value_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the ``null`` that only stands for its absence."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        concrete = [o for o in options if o != {"type": "null"}]
        if len(concrete) == 1 and len(concrete) < len(options):
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            schema = {**rest, **concrete[0]}
    if schema.get("default", 0) is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def _parameters(
    model: type[BaseModel] | None, where: Literal["path", "query"], defs: dict[str, Any]
) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = defs[model.__name__]
    required = set(schema.get("required", []))
    params = []
    for name, field_schema in schema.get("properties", {}).items():
        value = _value_schema(field_schema)
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": value,
        }
        if "description" in value:
            param["description"] = value["description"]
        params.append(param)
    return params


def _error(status: int, error_ref: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _ERROR_TEXT.get(status, "refused"),
        "content": {"application/json": {"schema": error_ref}},
    }
    if status == 401:
        answer["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}},
        }
    return answer


def _statuses(route: Route) -> list[int]:
    statuses = set(route.refusals)
    if not route.public:
        statuses |= {401, 503}
    if route.path_params is not None or route.query is not None or route.body is not None:
        statuses.add(422)
    if route.path_params is not None:
        statuses.add(404)
    if route.body is not None:
        statuses |= {408, 413}
    return sorted(statuses)


def openapi_document(
    routes: Sequence[Route], *, prefix: str, title: str, version: str
) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes`` served under ``prefix``."""
    refs, top = models_json_schema(_models(routes), ref_template=REF_PREFIX + "{model}")
    defs: dict[str, Any] = top.get("$defs", {})
    error_ref = refs[(ErrorBody, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
        }
        params = _parameters(route.path_params, "path", defs) + _parameters(
            route.query, "query", defs
        )
        if params:
            operation["parameters"] = params
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
            }
        success: dict[str, Any] = {"description": route.summary}
        if route.response is not None:
            schema = refs[(route.response, "serialization")]
            success["content"] = {"application/json": {"schema": schema}}
        responses = {str(route.status): success}
        responses.update({str(s): _error(s, error_ref) for s in _statuses(route)})
        operation["responses"] = responses
        if route.public:
            operation["security"] = []
        paths.setdefault(prefix + route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}},
        },
        "security": [{SECURITY_SCHEME: []}],
    }
