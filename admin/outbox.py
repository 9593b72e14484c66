"""Outbox handlers: enqueue, status, dead letters (paged) and their replay.

Invariants: requests go through ``operations.outbox`` (the Python API's checks), so the API accepts
exactly what applications may insert; a refused request writes nothing (422).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg

from admin.context import Call, Deps
from admin.cursor import CursorError, decode_dead_letters, encode_dead_letters
from admin.errors import ApiError, not_found
from admin.models import (
    DeadLetterOut,
    DeadLetterPage,
    DeadLettersQuery,
    Enqueued,
    EnqueueRebuild,
    EnqueueRequest,
    EnqueueUpsert,
    ItemPath,
    OutboxStatusOut,
    OutboxStatusQuery,
    Replayed,
)
from operations import outbox as client
from outbox.model import ItemState, OutboxItem
from store import outbox as store
from store.db import transaction


def request_of(body: EnqueueRequest) -> client.Request:
    """The checked ``operations.outbox`` request; ``ApiError`` 422 naming what is wrong."""
    wanted = body.root
    try:
        if isinstance(wanted, EnqueueRebuild):
            return client.rebuild_request(
                wanted.account_id, workspace_id=wanted.workspace_id, calendar_id=wanted.calendar_id
            )
        if not isinstance(wanted, EnqueueUpsert):
            return client.cancel_request(
                wanted.account_id,
                workspace_id=wanted.workspace_id,
                source_type=wanted.source_type,
                source_id=wanted.source_id,
                event_type=wanted.event_type,
                version=wanted.version,
                calendar_id=wanted.calendar_id,
            )
        start: date | datetime
        end: date | datetime
        no_dates = wanted.start_date is None and wanted.end_date is None
        no_times = wanted.start is None and wanted.end is None
        if wanted.start is not None and wanted.end is not None and no_dates:
            start, end = wanted.start, wanted.end
        elif wanted.start_date is not None and wanted.end_date is not None and no_times:
            start, end = wanted.start_date, wanted.end_date
        else:
            raise ApiError(
                422,
                "invalid_request",
                "an upsert takes start and end (timed) or start_date and end_date (all-day)",
            )
        return client.upsert_request(
            wanted.account_id,
            workspace_id=wanted.workspace_id,
            source_type=wanted.source_type,
            source_id=wanted.source_id,
            event_type=wanted.event_type,
            version=wanted.version,
            title=wanted.title,
            start=start,
            end=end,
            description=wanted.description,
            time_zone=wanted.time_zone,
            calendar_id=wanted.calendar_id,
        )
    except client.OutboxRequestError as error:
        raise ApiError(422, "invalid_request", str(error)) from None


def dead_letter_out(item: OutboxItem) -> DeadLetterOut:
    """The API's view of a dead letter."""
    source = item.source
    return DeadLetterOut(
        id=item.id,
        account_id=item.account_id,
        operation=item.operation.value,
        workspace_id=item.workspace_id,
        calendar_id=item.calendar_id,
        source_type=None if source is None else source.source_type,
        source_id=None if source is None else source.source_id,
        event_type=None if source is None else source.event_type,
        version=item.version,
        attempts=item.attempts,
        last_error=item.last_error,
        created_at=item.created_at,
    )


async def enqueue(deps: Deps, call: Call) -> Enqueued:
    """``POST /outbox``."""
    request = request_of(call.body_as(EnqueueRequest))
    try:
        item_id = await client.submit(deps.pool, request)
    except asyncpg.ForeignKeyViolationError:
        raise not_found("account") from None
    return Enqueued(id=item_id)


async def outbox_status(deps: Deps, call: Call) -> OutboxStatusOut:
    """``GET /outbox/status``."""
    report = await store.status(deps.pool, call.query_as(OutboxStatusQuery).account_id)
    age = report.oldest_pending_age
    return OutboxStatusOut(
        counts={state.value: report.counts.get(state, 0) for state in ItemState},
        oldest_pending_at=(
            None if report.oldest_pending_at is None else report.oldest_pending_at.astimezone(UTC)
        ),
        oldest_pending_age_s=None if age is None else age.total_seconds(),
    )


async def list_dead_letters(deps: Deps, call: Call) -> DeadLetterPage:
    """``GET /outbox/dead-letters``."""
    query = call.query_as(DeadLettersQuery)
    after = None
    if query.cursor is not None:
        try:
            after = decode_dead_letters(query.cursor)
        except CursorError:
            raise ApiError(422, "invalid_cursor", "the cursor is not valid here") from None
    items = await store.dead_letters(
        deps.pool, limit=query.limit + 1, after_id=after, account_id=query.account_id
    )
    page = items[: query.limit]
    more = len(items) > query.limit
    return DeadLetterPage(
        items=[dead_letter_out(item) for item in page],
        next_cursor=encode_dead_letters(page[-1].id) if more and page else None,
    )


async def replay_dead_letter(deps: Deps, call: Call) -> Replayed:
    """``POST /outbox/dead-letters/{item_id}/replay``: 409 unless it is a dead letter."""
    item_id = call.path_as(ItemPath).item_id
    async with transaction(deps.pool) as conn:
        item = await store.get_item(conn, item_id)
        if item is None:
            raise not_found("outbox item")
        if item.state is not ItemState.DEAD_LETTER:
            raise ApiError(409, "not_dead_letter", f"the item is {item.state.value}")
        replayed = await store.replay(conn, [item_id])
    return Replayed(id=item_id, replayed=replayed == 1)
