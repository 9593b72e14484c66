"""When a throttled answer slows everyone sharing a budget (``shared_penalty_s``, pure)."""

from __future__ import annotations

import pytest

from cluster.throttle_witness import shared_penalty_s


@pytest.mark.parametrize(
    ("own", "accounts", "retry_after", "expected"),
    [
        (True, 1, 30.0, 30.0),  # an account's own budget (Graph's mailbox): its Retry-After
        (True, 1, None, None),  # ...and without one, only the account's retry backs off
        (False, 1, 30.0, None),  # one account of a shared budget: its per-user quota
        (False, 2, None, None),
        (False, 3, None, 10.0),  # the quorum: the project's quota, everyone slows down
        (False, 5, 30.0, 30.0),
    ],
)
def test_a_shared_budget_slows_only_at_the_quorum(
    own: bool, accounts: int, retry_after: float | None, expected: float | None
) -> None:
    penalty = shared_penalty_s(
        own_budget=own,
        throttled_accounts=accounts,
        quorum=3,
        retry_after_s=retry_after,
        base_s=10.0,
    )
    assert penalty == expected
