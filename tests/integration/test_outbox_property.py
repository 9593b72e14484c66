"""A seeded property test of the outbox through the whole pipeline (``sandbox.harness.pipeline``).

Six accounts (three Google, three Microsoft; one Google account with the ``record`` conflict
policy, one Microsoft account with ``provider_wins``, the others the default ``local_wins``) get
random application requests over twelve sources each, in rounds driven by
``random.Random(seed)``: upserts with random content and growing versions, cancels, re-upserts
after a cancel, and late requests whose version is below one already inserted (stale). Each
round first lets users rename or delete some of our events in the emulators (then waits until
inbound sync saw it), then arms random faults on the emulators' event writes (429 with
Retry-After, 500/503, an expired access token) and inserts the requests one transaction each,
one of them while the test holds the account's calendar row locked so that the actor's write is
made at the provider and its commit is cut off (``crash_mid_sync``: the actor crashes and the
supervisor restarts it). The round ends when no item is pending and the pipeline is quiet.

Proven, per seed (the model is ``tests.support.outbox_scenario.Model``):
- every account's calendar, as the emulator exports it, equals the model: one event per live
  source showing its latest live version (or the user's edit the policy keeps), none for a
  cancelled source or one the user deleted after our last write; no other event, and no
  binding id on two events;
- Postgres mirrors the provider exactly (``Pipeline.differences``);
- the change feed has an origin ``provider`` change only for events a user edited, and one for
  every such edit; our own writes appear with origin ``outbox`` only;
- every item is ``done`` or ``skipped``: stale ones skipped, each source's deciding item done;
- with ``record``, exactly the sources whose upsert met a user's edit have a conflict row.

It found three bugs, now fixed: a stale item was written while the newer item of its source
backed off; a crash inside an outbox drain stranded the notifications the actor held
unacknowledged; after a crash between a provider write and its commit, inbound sync reported
our own write as the user's.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from uuid import UUID

import pytest

from sandbox.embedded import Services
from sandbox.harness.pipeline import Pipeline, crash_mid_sync, open_pipeline, wait_until
from store.db import PgPool
from store.vocabulary import Provider
from tests.support.outbox_scenario import (
    AccountModel,
    Model,
    Request,
    Requests,
    calendar_of,
    delete,
    insert,
    provider_view,
    rename,
    write_fault,
)

POLICIES: tuple[tuple[Provider, str], ...] = (
    ("google", "local_wins"),
    ("google", "local_wins"),
    ("google", "record"),
    ("microsoft", "local_wins"),
    ("microsoft", "local_wins"),
    ("microsoft", "provider_wins"),
)
SOURCES = 12
ROUNDS = 4
REQUESTS_PER_ROUND = (30, 45)
EDITS_PER_ROUND = (3, 6)


async def drained(pipeline: Pipeline) -> bool:
    pipeline.check_runtime()
    left = await pipeline.pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'pending'")
    return int(left) == 0


async def last_change(pool: PgPool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM changes"))


async def connect(pipeline: Pipeline, pool: PgPool, seed: int) -> Model:
    model = Model()
    for i, (provider, policy) in enumerate(POLICIES):
        person = await pipeline.add_person(provider, f"p{i}-{seed}@example.com")
        await pool.execute(
            "UPDATE accounts SET conflict_policy = $2 WHERE id = $1", person.account_id, policy
        )
        model.accounts[person.account_id] = AccountModel(person, policy)
    await wait_until(pipeline.watching, "every account synced and watching", timeout_s=40)
    await pipeline.settle()
    return model


async def user_edits(
    pipeline: Pipeline, model: Model, rng: random.Random, script: list[str]
) -> list[tuple[UUID, str, int]]:
    """Users rename or delete some of our events; (account, event id, change mark) of each."""
    edits: list[tuple[UUID, str, int]] = []
    mark = await last_change(pipeline.pool)
    for _ in range(rng.randint(*EDITS_PER_ROUND)):
        account = rng.choice(list(model.accounts.values()))
        person = account.person
        _, ids, _ = await provider_view(pipeline, person)
        live = sorted(s for s, state in account.sources.items() if state.shown and s in ids)
        if not live:
            continue
        source = rng.choice(live)
        if rng.random() < 0.7:
            title = f"{rng.choice(('Moved', 'Mine', 'Edited'))} by {person.email} {len(edits)}"
            rename(pipeline, person, ids[source], title)
            model.user_renamed(person.account_id, source, title)
            script.append(f"user renames {person.email}/{source}")
        else:
            delete(pipeline, person, ids[source])
            model.user_deleted(person.account_id, source)
            script.append(f"user deletes {person.email}/{source}")
        edits.append((person.account_id, ids[source], mark))
    await pipeline.settle()
    return edits


async def requests_round(
    pipeline: Pipeline, model: Model, requests: Requests, script: list[str]
) -> int:
    """Faults, then the round's requests (one with a crash after its write); crashes landed."""
    rng = requests.rng
    for _ in range(rng.randint(1, 3)):
        script.append(f"fault {write_fault(pipeline, rng, rng.choice(('google', 'microsoft')))}")
    count = rng.randint(*REQUESTS_PER_ROUND)
    crash_at = rng.randrange(count)
    crashes = 0
    for index in range(count):
        account = rng.choice(list(model.accounts.values()))
        request = requests.next(account)
        script.append(
            f"{account.person.email} {request.operation} {request.source}"
            f" v{request.version} {request.content}"
        )
        if index == crash_at:
            crashes += await crash_after_write(pipeline, model, request, script)
        else:
            model.inserted(request, await insert(pipeline.pool, request))
        if rng.random() < 0.2:
            await asyncio.sleep(0.02)  # let some drains start between requests
    return crashes


async def crash_after_write(
    pipeline: Pipeline, model: Model, request: Request, script: list[str]
) -> int:
    """Insert ``request`` while the calendar row is locked: the actor's commit after its
    provider call blocks and its backend is terminated. 1 if a crash landed."""
    person = model.accounts[request.account_id].person
    tasks: list[asyncio.Task[int]] = []

    def trigger() -> None:
        tasks.append(asyncio.get_running_loop().create_task(insert(pipeline.pool, request)))

    crash = await crash_mid_sync(pipeline, person, calendar_of(person), trigger, timeout_s=3.0)
    model.inserted(request, await tasks[0])
    script.append(f"  crash {'landed' if crash else 'missed'}")
    return int(crash is not None)


@pytest.mark.parametrize("seed", [20261122, 7])
@pytest.mark.usefixtures("redis")  # empties Redis first: no streams or groups of other tests
async def test_outbox_writes_converge_to_the_intended_calendar(
    seed: int, database_url: str, services: Services, pool: PgPool
) -> None:
    rng = random.Random(seed)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with open_pipeline(database_url, services.redis_url, pool, shards=4) as pipeline:
        model = await connect(pipeline, pool, seed)
        requests = Requests(rng, model, base, SOURCES)
        start_mark = await last_change(pool)
        script: list[str] = []
        edits: list[tuple[UUID, str, int]] = []
        crashes = 0
        for round_ in range(ROUNDS):
            script.append(f"-- round {round_}")
            if round_ > 0:
                edits += await user_edits(pipeline, model, rng, script)
            crashes += await requests_round(pipeline, model, requests, script)
            await wait_until(lambda: drained(pipeline), "the outbox to drain", timeout_s=60)
            for provider in ("google", "microsoft"):
                pipeline.control(provider).clear_faults()
            await pipeline.settle()

        problems: list[str] = []
        for account_id, account in model.accounts.items():
            shown, _, found = await provider_view(pipeline, account.person)
            problems += found
            expected = model.expected(account_id)
            for source in sorted(shown.keys() | expected.keys()):
                if shown.get(source) != expected.get(source):
                    problems.append(
                        f"{account.person.email} ({account.policy}) {source}:"
                        f" provider={shown.get(source)} model={expected.get(source)}"
                    )
        assert problems == [], "\n".join([*script, *problems])
        assert await pipeline.differences() == []

        changes = await pool.fetch(
            "SELECT id, account_id, event_id, kind, origin FROM changes WHERE id > $1",
            start_mark,
        )
        edited = {(account_id, event_id) for account_id, event_id, _ in edits}
        echoes = [
            dict(c) for c in changes if c["origin"] == "provider"
            and (c["account_id"], c["event_id"]) not in edited
        ]  # fmt: skip
        assert echoes == [], "inbound sync reported our own writes as the user's"
        unseen = [
            edit
            for edit in edits
            if not any(
                c["origin"] == "provider"
                and (c["account_id"], c["event_id"]) == edit[:2]
                and c["id"] > edit[2]
                for c in changes
            )
        ]
        assert unseen == [], "a user's edit missing from the change feed"

        states = {
            int(r["id"]): (str(r["state"]), r["last_error"])
            for r in await pool.fetch("SELECT id, state, last_error FROM outbox")
        }
        assert {state for state, _ in states.values()} <= {"done", "skipped"}, states
        wrongly_done = sorted(i for i in model.must_skip if states[i][0] != "skipped")
        assert wrongly_done == [], "stale items were written"
        deciding = {
            s.last_live
            for a in model.accounts.values()
            for s in a.sources.values()
            if s.last_live is not None
        }
        assert sorted(i for i in deciding if states[i][0] != "done") == []

        for account_id, account in model.accounts.items():
            if account.policy != "record":
                continue
            rows = await pool.fetch(
                "SELECT DISTINCT b.source_id FROM outbox_conflicts c"
                " JOIN event_bindings b ON b.id = c.binding_id WHERE c.account_id = $1",
                account_id,
            )
            recorded = {str(r["source_id"]) for r in rows}
            assert recorded == {s for s, st in account.sources.items() if st.conflicted}
        assert crashes >= 1, "no crash landed after a write"
