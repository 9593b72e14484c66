"""calendarView delta rounds, pages and sync-state generations (pure, no aiohttp).

A *chain* is one client's change tracking over one calendar and window. Each page served mints
a new *generation* that the returned link's token names; only the newest ``keep`` generations of
a chain are kept, so replaying an older link after later pages were fetched yields 410
``SyncStateNotFound`` (as observed on Graph). A round is computed once, when it starts (initial
request or a deltaLink), as a diff of the calendar view against the view the previous round
ended with, and then paged; so the pages of one round are a consistent snapshot.

Invariants: a round reports every instance that is new or whose changeKey changed, ``@removed``
(reason ``deleted``) for every instance that left the view (deleted, cancelled, or moved out of
the window) and, as documented, for events outside the window that changed since the last
round; ``@odata.deltaLink`` appears on the last page of a round only.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import GraphError, sync_state_not_found
from .store import Instance, Store
from .times import format_date_time_zone

EVENT_TYPE = "#microsoft.graph.event"
SYNC_STATE_NOT_FOUND = "SyncStateNotFound"
RESYNC_REQUIRED = "resyncRequired"


@dataclass
class Round:
    entries: list[Instance | str]  # an Instance, or the id of a removed one
    view: dict[str, str]  # id -> changeKey at the round's start
    seq: int


@dataclass
class Generation:
    round: Round
    offset: int | None  # None: the round is complete (a deltaLink)


@dataclass
class Chain:
    id: str
    user_id: str
    calendar_id: str
    window: tuple[datetime, datetime]
    generations: dict[int, Generation] = field(default_factory=dict)
    highest: int = 0
    dead: str | None = None


@dataclass
class Page:
    items: list[dict[str, Any]]
    chain: Chain
    generation: int
    complete: bool  # True: the token is a $deltatoken, else a $skiptoken


@dataclass
class DeltaEngine:
    store: Store
    keep: int = 3
    chains: dict[str, Chain] = field(default_factory=dict)
    replay_next: int = 0

    def start(self, user_id: str, calendar_id: str, window: tuple[datetime, datetime]) -> Chain:
        chain = Chain("c" + secrets.token_hex(8), user_id, calendar_id, window)
        self.chains[chain.id] = chain
        return chain

    def resolve(self, user_id: str, chain_id: str, gen: int) -> tuple[Chain, Generation]:
        """The chain and generation a token names, or 410 as Graph answers."""
        chain = self.chains.get(chain_id)
        if chain is None or chain.user_id != user_id:
            raise sync_state_not_found(
                SYNC_STATE_NOT_FOUND,
                f"The sync state generation is not found; generation={gen};[highest=0].",
                None,
            )
        if chain.dead is not None:
            raise self._gone(chain, gen, chain.dead)
        generation = chain.generations.get(gen)
        if generation is None:
            raise self._gone(chain, gen, SYNC_STATE_NOT_FOUND)
        return chain, generation

    def page(
        self,
        chain: Chain,
        generation: Generation | None,
        size: int,
        tz_name: str,
        *,
        force_empty: bool = False,
    ) -> Page:
        """Serve the next page: start a round for a new chain or after a deltaLink."""
        if generation is None or generation.offset is None:
            previous = None if generation is None else generation.round
            current = self._round(chain, previous)
            offset = 0
        else:
            current, offset = generation.round, generation.offset
        taken = [] if force_empty else current.entries[offset : offset + size]
        end = offset + len(taken)
        complete = not force_empty and end >= len(current.entries)
        chain.highest += 1
        chain.generations[chain.highest] = Generation(current, None if complete else end)
        for old in [g for g in chain.generations if g <= chain.highest - self.keep]:
            del chain.generations[old]
        items = [_render(entry, tz_name) for entry in taken]
        return Page(items, chain, chain.highest, complete)

    def invalidate(self, user_id: str, code: str = SYNC_STATE_NOT_FOUND) -> int:
        """Kill every chain of the user: their tokens now get 410 with ``code``."""
        victims = [c for c in self.chains.values() if c.user_id == user_id and c.dead is None]
        for chain in victims:
            chain.dead = code
        return len(victims)

    def _round(self, chain: Chain, previous: Round | None) -> Round:
        store = self.store
        current = store.view(chain.user_id, chain.calendar_id, chain.window)
        base = previous.view if previous is not None else {}
        entries: list[Instance | str] = []
        if previous is not None and self.replay_next > 0:
            # The same change appears again in a later response (documented; clients dedupe).
            self.replay_next -= 1
            entries.extend(previous.entries)
        entries.extend(i for i in current.values() if base.get(i.id) != i.change_key)
        entries.extend(i for i in base if i not in current)
        if previous is not None:
            for event_id in store.changed_since(chain.user_id, chain.calendar_id, previous.seq):
                record = store.events[event_id]
                if (
                    record.kind != "seriesMaster"
                    and event_id not in current
                    and event_id not in base
                ):
                    # Outside the window yet changed: reported as removed (event-delta.md).
                    entries.append(event_id)
        view = {i.id: i.change_key for i in current.values()}
        return Round(entries, view, store.seq)

    def _gone(self, chain: Chain, gen: int, code: str) -> GraphError:
        if code == RESYNC_REQUIRED:
            message = "The delta token is no longer valid, and the app must reset the sync state."
        else:
            kept = "".join(f"[{g}]" for g in sorted(chain.generations, reverse=True))
            message = (
                f"The sync state generation is not found; generation={gen};"
                f"[highest={chain.highest}]{kept}."
            )
        return sync_state_not_found(code, message, None)


def removed(event_id: str) -> dict[str, Any]:
    return {"@odata.type": EVENT_TYPE, "id": event_id, "@removed": {"reason": "deleted"}}


def _render(entry: Instance | str, tz_name: str) -> dict[str, Any]:
    if isinstance(entry, str):
        return removed(entry)
    return {"@odata.type": EVENT_TYPE, **with_zone(entry.resource, tz_name)}


def with_zone(resource: dict[str, Any], tz_name: str) -> dict[str, Any]:
    """A copy of a UTC-rendered event with start/end shown in ``tz_name`` (outlook.timezone)."""
    out = dict(resource)
    for name in ("start", "end"):
        value = resource.get(name)
        if isinstance(value, dict) and tz_name != "UTC":
            moment = datetime.fromisoformat(value["dateTime"][:26] + "+00:00")
            out[name] = format_date_time_zone(moment, tz_name)
    return out
