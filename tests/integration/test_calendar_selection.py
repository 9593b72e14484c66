"""The default selection rule, in Python (``CalendarState.is_selected``) and in SQL
(``SELECTED_SQL``, used by the audit and the outbox), agree on every combination."""

from __future__ import annotations

import itertools

from store.accounts import create_account
from store.calendars import SELECTED_SQL, list_calendar_states, selected_by_default
from store.db import PgPool


def test_the_default_rule() -> None:
    assert selected_by_default(True, "reader")  # the primary, always
    assert selected_by_default(False, "owner") and selected_by_default(False, "writer")
    assert not selected_by_default(False, "reader")
    assert not selected_by_default(False, "freeBusyReader")
    assert selected_by_default(False, None)  # a role the provider did not say: kept


async def test_python_and_sql_agree(pool: PgPool) -> None:
    account = await create_account(pool, provider="google", external_user_id="s", shard_count=1)
    combos = list(
        itertools.product((True, False), ("owner", "writer", "reader", None), (None, True, False))
    )
    for n, (primary, role, choice) in enumerate(combos):
        await pool.execute(
            "INSERT INTO calendars (account_id, id, is_primary, access_role, selected)"
            " VALUES ($1, $2, $3, $4, $5)",
            account.id,
            f"c{n:02d}",
            primary,
            role,
            choice,
        )
    in_sql = {
        r["id"]: r["selected"]
        for r in await pool.fetch(
            f"SELECT c.id, {SELECTED_SQL} AS selected FROM calendars c WHERE c.account_id = $1",
            account.id,
        )
    }
    states = await list_calendar_states(pool, account.id)
    assert {s.id: s.is_selected for s in states} == in_sql
    assert sum(in_sql.values()) not in (0, len(combos))
