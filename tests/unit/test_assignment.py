"""Shard assignment: sticky, balanced within one, minimal moves, steady while moving (pure)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Mapping

import pytest

from cluster.assignment import Plan, assign, max_replicas, plan, quotas

Owners = dict[int, str | None]


def unowned(shard_count: int) -> Owners:
    return dict.fromkeys(range(shard_count))


def counts(target: Mapping[int, str], members: Collection[str]) -> dict[str, int]:
    """Shards per live member, idle members included."""
    held = Counter(target.values())
    return {member: held[member] for member in members}


def moved(current: Mapping[int, str | None], target: Mapping[int, str]) -> set[int]:
    return {shard for shard, owner in target.items() if current.get(shard) != owner}


def fewest_moves(current: Mapping[int, str | None], members: Collection[str]) -> int:
    """Lower bound for any balanced assignment, computed independently of ``assign``."""
    live = set(members)
    base, extra = divmod(len(current), len(live))
    held = Counter(owner for owner in current.values() if owner in live)
    above_base = sum(1 for member in live if held[member] > base)
    kept = sum(min(held[member], base) for member in live) + min(extra, above_base)
    return len(current) - kept


def random_case(rng: random.Random) -> tuple[Owners, list[str]]:
    """Random shards, live members, and owners drawn from live, dead and nobody, skewed."""
    names = [f"r{i:02d}" for i in range(rng.randint(1, 12))]
    live = rng.sample(names, rng.randint(1, len(names)))
    candidates: list[str | None] = [*names, "dead-1", "dead-2", None]
    weights = [rng.random() ** 3 for _ in candidates]  # a few heavy owners, many light
    shard_count = rng.choice([0, 1, 2, 7, 10, 64, 100, 256, 300])
    current = {s: rng.choices(candidates, weights)[0] for s in range(shard_count)}
    return current, live


def check_properties(current: Owners, live: list[str]) -> dict[int, str]:
    target = assign(current, live)
    assert set(target) == set(current)
    assert set(target.values()) <= set(live)
    shard_counts = counts(target, set(live))
    assert max(shard_counts.values()) - min(shard_counts.values()) <= 1
    changed = moved(current, target)
    assert len(changed) == fewest_moves(current, live)
    # Sticky: a live owner within its quota keeps every shard it has.
    held = Counter(owner for owner in current.values() if owner in live)
    for shard, owner in current.items():
        if owner in live and held[owner] <= shard_counts[owner]:
            assert target[shard] == owner
    return target


def test_three_members_share_256_shards_within_one() -> None:
    target = assign(unowned(256), ["a", "b", "c"])
    assert sorted(counts(target, "abc").values()) == [85, 85, 86]
    assert counts(target, "abc")["a"] == 86  # the + 1 of a fresh start goes by name


def test_a_fourth_member_takes_exactly_its_share_from_the_others() -> None:
    before = assign(unowned(256), ["a", "b", "c"])
    after = assign(before, ["a", "b", "c", "d"])
    assert counts(after, "abcd") == {"a": 64, "b": 64, "c": 64, "d": 64}
    changed = moved(before, after)
    assert len(changed) == 64  # 22 + 21 + 21: what balance needs, no more
    assert {after[shard] for shard in changed} == {"d"}  # nothing moves between a, b and c
    assert Counter(before[shard] for shard in changed) == {"a": 22, "b": 21, "c": 21}


def test_a_member_leaving_spreads_its_shards_over_the_rest_only() -> None:
    before = assign(unowned(256), ["a", "b", "c", "d"])
    after = assign(before, ["a", "b", "c"])
    changed = moved(before, after)
    assert changed == {shard for shard, owner in before.items() if owner == "d"}
    assert sorted(counts(after, "abc").values()) == [85, 85, 86]


def test_a_dead_owners_shards_go_to_survivors_in_runs_by_name() -> None:
    current: Owners = {0: "a", 1: "dead", 2: "b", 3: "dead", 4: "dead", 5: None, 6: "a"}
    target = assign(current, ["b", "a", "c"])  # 7 shards: quotas a 3, b 2, c 2
    assert target == {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "c", 6: "a"}
    assert moved(current, target) == {1, 3, 4, 5}  # only the orphans


def test_all_members_new_take_over_from_dead_owners() -> None:
    current: Owners = {s: f"old-{s % 5}" for s in range(100)}
    target = check_properties(current, ["x", "y", "z"])
    assert len(moved(current, target)) == 100
    assert sorted(counts(target, "xyz").values()) == [33, 33, 34]


def test_the_extra_shard_goes_to_members_already_above_base() -> None:
    # 10 shards over 3: base 3, one member gets 4. "c" already holds 4: nothing moves.
    current: Owners = {s: "abccbcacba"[s] for s in range(10)}
    assert Counter(current.values()) == {"a": 3, "b": 3, "c": 4}
    assert assign(current, "abc") == current
    # Two above base: the first by name keeps 4, the other gives one away to "a".
    current = {s: "bbbbbccccc"[s] for s in range(10)}
    target = assign(current, "abc")
    assert counts(target, "abc") == {"a": 3, "b": 4, "c": 3}
    assert moved(current, target) == {4, 8, 9}  # each gives away its highest shards


def test_over_quota_members_give_away_their_highest_shards() -> None:
    current: Owners = {s: "a" for s in range(6)}
    assert assign(current, ["a", "b"]) == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: "b"}


def test_idempotent_and_a_fixed_point() -> None:
    rng = random.Random(11)
    for _ in range(300):
        current, live = random_case(rng)
        once = assign(current, live)
        assert assign(once, live) == once
        assert not moved(once, assign(once, live))


def test_independent_of_input_order() -> None:
    rng = random.Random(5)
    for _ in range(200):
        current, live = random_case(rng)
        expected = assign(current, live)
        shuffled_shards = list(current.items())
        rng.shuffle(shuffled_shards)
        shuffled_live = list(live)
        rng.shuffle(shuffled_live)
        again = assign(dict(shuffled_shards), tuple(shuffled_live) + tuple(live[:1]))
        assert again == expected
        assert list(again) == sorted(again)  # the result itself iterates in shard order


def test_properties_hold_for_random_cases() -> None:
    rng = random.Random(2024)
    for _ in range(2000):
        check_properties(*random_case(rng))


def test_balance_and_minimal_moves_across_joins_and_leaves() -> None:
    rng = random.Random(99)
    current: Owners = unowned(256)
    live = {"r00"}
    for _ in range(300):
        if len(live) > 1 and rng.random() < 0.5:
            live.discard(rng.choice(sorted(live)))
        else:
            live.add(f"r{rng.randrange(40):02d}")
        target = check_properties(current, sorted(live))
        current = dict(target)


def test_migration_converges_without_retargeting() -> None:
    """Released and claimed one at a time in random order, the target never changes."""
    rng = random.Random(3)
    for _ in range(80):
        current, live = random_case(rng)
        target = assign(current, live)
        # Dead owners' leases expire first: those shards become unowned.
        current = {s: owner if owner in live else None for s, owner in current.items()}
        assert assign(current, live) == target
        while current != target:
            member = rng.choice(live)
            steps = plan(member, current, target)
            if steps.releases and (not steps.claims or rng.random() < 0.5):
                current[rng.choice(steps.releases)] = None
            elif steps.claims:
                current[rng.choice(steps.claims)] = member
            assert assign(current, live) == target


def test_no_live_member_owns_nothing() -> None:
    assert assign({0: "a", 1: None}, []) == {}
    assert assign({}, ["a"]) == {}


def test_duplicate_members_count_once() -> None:
    assert assign(unowned(4), ["a", "a", "b"]) == {0: "a", 1: "a", 2: "b", 3: "b"}


def test_quotas_rank_members_above_base_first_then_by_name() -> None:
    assert quotas(10, {"a": 0, "b": 0, "c": 0}) == {"a": 4, "b": 3, "c": 3}
    assert quotas(10, {"a": 0, "b": 5, "c": 5}) == {"a": 3, "b": 4, "c": 3}
    assert quotas(11, {"a": 0, "b": 9, "c": 4}) == {"a": 3, "b": 4, "c": 4}
    assert quotas(5, {}) == {}


def test_plan_splits_releases_claims_and_waits() -> None:
    current: Owners = {0: "a", 1: "a", 2: None, 3: "b", 4: "dead", 5: "a"}
    target = {0: "a", 1: "b", 2: "a", 3: "b", 4: "a", 5: "b"}
    assert plan("a", current, target) == Plan(releases=(1, 5), claims=(2,), waiting=(4,))
    assert plan("b", current, target) == Plan(releases=(), claims=(), waiting=(1, 5))
    assert plan("c", current, target) == Plan((), (), ())


def test_plan_with_no_live_member_releases_everything_held() -> None:
    current: Owners = {0: "a", 1: "b", 2: "a"}
    assert plan("a", current, assign(current, [])) == Plan(releases=(0, 2), claims=(), waiting=())


@pytest.mark.parametrize(("shards", "replicas"), [(256, 25), (9, 0), (10, 1), (65536, 6553)])
def test_max_replicas_keeps_ten_shards_each(shards: int, replicas: int) -> None:
    assert max_replicas(shards) == replicas
