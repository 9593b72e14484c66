"""The events collection (``GET /me/events``, ``GET /me/calendars/{id}/events``): singles and
series masters with the documented extended-property ``$filter`` and ``$expand``, paged by
``$top``/``$skip`` (pure, no aiohttp).

Invariants: events are listed oldest first; ``@odata.nextLink`` appears only while more events
follow and repeats the query's options (percent-encoded, spaces as ``%20``); a ``$``-option other
than ``$filter``, ``$expand``, ``$top`` and ``$skip`` is 400, since the emulator offers no more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from . import extended
from .errors import bad_request
from .store import EventRecord, Store

DEFAULT_TOP = 10  # Graph's default page size for event collections
MAX_TOP = 1000
_OPTIONS = ("$filter", "$expand", "$top", "$skip")


@dataclass(frozen=True)
class ListQuery:
    top: int = DEFAULT_TOP
    skip: int = 0
    where: tuple[str, str] | None = None  # (canonical property id, value) from $filter
    expand: str | None = None  # canonical property id from $expand
    kept: tuple[tuple[str, str], ...] = ()  # $filter/$expand as sent, for the next link


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """Validate the collection's query options; 400 for anything the emulator does not offer."""
    for name in query:
        if name.startswith("$") and name not in _OPTIONS:
            raise bad_request(
                f"The query parameter '{name}' is not supported.", "ErrorInvalidUrlQuery"
            )
    try:
        top = int(query.get("$top", DEFAULT_TOP))
        skip = int(query.get("$skip", 0))
    except ValueError as exc:
        raise bad_request("Invalid $top or $skip value.") from exc
    if top < 1 or skip < 0:
        raise bad_request("Invalid $top or $skip value.")
    text_filter, text_expand = query.get("$filter"), query.get("$expand")
    return ListQuery(
        top=min(top, MAX_TOP),
        skip=skip,
        where=None if text_filter is None else extended.parse_filter(text_filter),
        expand=None if text_expand is None else extended.parse_expand(text_expand),
        kept=tuple((n, query[n]) for n in ("$filter", "$expand") if n in query),
    )


def list_page(
    store: Store,
    records: list[EventRecord],
    query: ListQuery,
    render: Callable[[EventRecord], dict[str, Any]],
    link_base: str,
) -> dict[str, Any]:
    """One page of the collection: ``value`` and, while more follow, ``@odata.nextLink``."""
    if query.where is not None:
        wanted, value = query.where
        records = [
            r for r in records if extended.matches(store.extended_properties(r), wanted, value)
        ]
    page = records[query.skip : query.skip + query.top]
    body: dict[str, Any] = {}
    if query.skip + query.top < len(records):
        options = [*query.kept, ("$top", str(query.top)), ("$skip", str(query.skip + query.top))]
        encoded = urlencode(options, safe="$()'", quote_via=quote)
        body["@odata.nextLink"] = f"{link_base}?{encoded}"
    body["value"] = [
        extended.with_expansion(render(r), store.extended_properties(r), query.expand) for r in page
    ]
    return body
