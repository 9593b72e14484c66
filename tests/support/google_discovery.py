"""A small validator for response bodies against the schemas of Google's shipped discovery doc.

It checks ``$ref``, ``type``, ``properties`` (unknown properties are errors), ``items``,
``additionalProperties`` and the formats date-time, date and int64/uint64-as-string.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import googleapiclient

_INT32 = (-(2**31), 2**31 - 1)


@cache
def calendar_discovery() -> dict[str, Any]:
    path = Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def validate(schema_name: str, value: Any) -> None:
    """Raise AssertionError naming the first place ``value`` breaks the schema."""
    doc = calendar_discovery()
    _check(doc, doc["schemas"][schema_name], value, schema_name)


def _check(doc: dict[str, Any], schema: dict[str, Any], value: Any, path: str) -> None:
    if "$ref" in schema:
        schema = doc["schemas"][schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), f"{path}: expected object, got {value!r}"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                _check(doc, props[name], item, f"{path}.{name}")
            elif extra is not None:
                _check(doc, extra, item, f"{path}[{name!r}]")
            else:
                raise AssertionError(f"{path}: unknown property {name!r}")
    elif kind == "array":
        assert isinstance(value, list), f"{path}: expected array, got {value!r}"
        for index, item in enumerate(value):
            _check(doc, schema["items"], item, f"{path}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected string, got {value!r}"
        _check_format(schema.get("format"), value, path)
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: not an integer"
        if schema.get("format") == "int32":
            assert _INT32[0] <= value <= _INT32[1], f"{path}: outside int32"
    elif kind == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: NaN"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: expected boolean, got {value!r}"
    elif kind not in (None, "any"):
        raise AssertionError(f"{path}: unsupported schema type {kind!r}")


def _check_format(fmt: str | None, value: str, path: str) -> None:
    if fmt == "date-time":
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        assert moment.tzinfo is not None, f"{path}: date-time without offset"
    elif fmt == "date":
        date.fromisoformat(value)
    elif fmt in ("int64", "uint64"):
        assert value.lstrip("-").isdigit(), f"{path}: not an {fmt} string: {value!r}"
