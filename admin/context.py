"""What a handler gets (the shared dependencies, its parsed request) and what a route declares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

from config.settings import Settings
from store.crypto import Keyring
from store.db import PgPool

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Deps:
    """The open pool, Redis client, settings and keyring every handler may use."""

    pool: PgPool
    redis: Redis
    settings: Settings
    keyring: Keyring
    clock: Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Call:
    """A request's validated path parameters, query and body (None where the route has none)."""

    path: BaseModel | None = None
    query: BaseModel | None = None
    body: BaseModel | None = None

    def path_as(self, model: type[M]) -> M:
        """The path parameters, as the route declared them."""
        return _as(self.path, model)

    def query_as(self, model: type[M]) -> M:
        """The query, as the route declared it."""
        return _as(self.query, model)

    def body_as(self, model: type[M]) -> M:
        """The body, as the route declared it."""
        return _as(self.body, model)


def _as(value: BaseModel | None, model: type[M]) -> M:
    if not isinstance(value, model):
        raise TypeError(f"the route declares no {model.__name__}")
    return value


Handler = Callable[[Deps, Call], Awaitable[BaseModel | None]]
Method = Literal["GET", "POST", "PUT", "DELETE"]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: the router serves it and the OpenAPI document describes it from this.

    ``response`` None means an empty answer (204); ``refusals`` are the statuses the handler
    itself may answer besides those every route has (401, 422 on invalid input, 404 on unknown
    path ids, 503).
    """

    method: Method
    path: str  # under the API prefix, with ``{name}`` parameters as in ``path_params``
    handler: Handler
    summary: str
    tag: str
    status: int = 200
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    refusals: tuple[int, ...] = ()
    public: bool = False  # served without a token

    @property
    def operation_id(self) -> str:
        """The OpenAPI operationId: the handler's name."""
        return self.handler.__name__
