"""schemathesis drives the running admin API from its own OpenAPI document: no 5xx, every
answer conforms to the document, and every protected operation refuses a missing or wrong
token. Also: the router and the document list exactly the same operations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from redis.asyncio import Redis
from schemathesis import Case as AnyCase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from admin.app import create_admin_app
from admin.routes import PREFIX, ROUTES, document
from store.accounts import create_account
from store.crypto import Keyring
from store.db import PgPool
from tests.support.admin_server import SHARD_COUNT, TOKEN, admin_settings, running_admin

Case = AnyCase[Any]  # an operation's generated request
METHODS = ("get", "post", "put", "delete", "patch")
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _operations(*, with_input: bool = False) -> list[tuple[str, str]]:
    """(path, method) of every documented operation; only those taking input if asked."""
    paths: dict[str, dict[str, Any]] = document()["paths"]
    return [
        (path, method)
        for path, ops in paths.items()
        for method, op in ops.items()
        if method in METHODS and (not with_input or "parameters" in op or "requestBody" in op)
    ]


def _fuzz(
    base_url: str,
    mode: GenerationMode,
    examples: int,
    check: Callable[[Case, requests.Session], None],
    *,
    path_parameters: dict[str, Any] | None = None,
) -> int:
    """Run ``check`` on generated cases of every operation; how many operations ran."""
    schema = schemathesis.openapi.from_dict(document())
    ran = 0
    with requests.Session() as session:
        # Invalid data needs some input to be invalid in.
        for path, method in _operations(with_input=mode is GenerationMode.NEGATIVE):
            operation = schema[path][method.upper()]
            wanted = {
                name: value
                for name, value in (path_parameters or {}).items()
                if "{" + name + "}" in path
            }
            strategy = operation.as_strategy(mode, path_parameters=wanted or None)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Case) -> None:
                check(case, session)

            run()
            ran += 1
    del base_url
    return ran


def _conforming(base_url: str, checks: list[Any]) -> Callable[[Case, requests.Session], None]:
    def check(case: Case, session: requests.Session) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=checks)

    return check


def _refused(base_url: str, authorization: str | None) -> Callable[[Case, requests.Session], None]:
    def check(case: Case, session: requests.Session) -> None:
        if case.headers:
            case.headers.pop("Authorization", None)  # a case-insensitive dict
        headers = {} if authorization is None else {"Authorization": authorization}
        response = case.call(base_url=base_url, session=session, headers=headers)
        if case.operation.path == PREFIX + "/openapi.json":
            assert response.status_code == 200  # the one public operation
            return
        assert response.status_code == 401, (case.operation.label, response.status_code)
        (challenge,) = response.headers["www-authenticate"]  # lowercase keys, list values
        assert challenge.startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
        case.validate_response(response, checks=CONFORMANCE)

    return check


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    account = await create_account(
        pool, provider="google", external_user_id="fuzz@example.com", shard_count=SHARD_COUNT
    )
    async with running_admin(pool, redis, keyring) as base_url:
        # Random ids (mostly unknown), then a known account so its operations answer 2xx too.
        ran = await asyncio.to_thread(
            _fuzz, base_url, GenerationMode.POSITIVE, 15, _conforming(base_url, CONFORMANCE)
        )
        await asyncio.to_thread(
            _fuzz,
            base_url,
            GenerationMode.POSITIVE,
            10,
            _conforming(base_url, CONFORMANCE),
            path_parameters={"account_id": str(account.id)},
        )
        # Invalid input: refused in the documented shape, never a 5xx. (Not schemathesis'
        # negative_data_rejection: it counts a generated extra parameter whose value the HTTP
        # client then drops, e.g. a None, as accepted invalid data.)
        await asyncio.to_thread(
            _fuzz, base_url, GenerationMode.NEGATIVE, 10, _conforming(base_url, CONFORMANCE)
        )
    assert ran == len(ROUTES)


async def test_every_protected_operation_refuses_a_missing_or_wrong_token(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    async with running_admin(pool, redis, keyring) as base_url:
        for authorization in (None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "):
            ran = await asyncio.to_thread(
                _fuzz, base_url, GenerationMode.POSITIVE, 3, _refused(base_url, authorization)
            )
            assert ran == len(ROUTES)


async def test_router_and_document_list_the_same_operations(
    pool: PgPool, redis: Redis, keyring: Keyring
) -> None:
    app = create_admin_app(pool, redis, admin_settings(), keyring)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {(method, path) for path, method in _operations()}
    assert served == documented
    assert len(served) == len(ROUTES)
