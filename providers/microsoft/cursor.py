"""The opaque ``SyncPage.next_cursor`` for Graph, and the rule for following Graph's links.

Invariants:
- a cursor holds the calendar, whether the round is a full sync, and Graph's
  ``@odata.nextLink`` byte for byte: Graph's links encode the window and every other query
  parameter, so they are followed verbatim and never rebuilt (providers.md B.1, C.2);
- ``encode`` and ``decode`` are pure inverses; ``decode`` raises ``ValueError`` on anything it
  did not produce (wrong version, wrong shape, not base64);
- ``on_base`` accepts a link only on the configured Graph origin and API version path, so a
  bearer token never travels to a host a response (or a stored value) names.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from providers.cursor_codec import pack, required_str, unpack

_VERSION = 1


@dataclass(frozen=True, slots=True)
class SyncCursor:
    """Where one sync round continues: Graph's nextLink, and what the round is."""

    calendar_id: str
    full_sync: bool
    link: str


def encode(cursor: SyncCursor) -> str:
    """The cursor as compact urlsafe base64 text."""
    return pack(_VERSION, {"c": cursor.calendar_id, "f": cursor.full_sync, "l": cursor.link})


def decode(text: str) -> SyncCursor:
    """The cursor ``encode`` produced; ValueError for anything else."""
    fields = unpack(text, _VERSION)
    full_sync = fields.get("f")
    if not isinstance(full_sync, bool):
        raise ValueError("cursor field 'f' is not a boolean")
    return SyncCursor(required_str(fields, "c"), full_sync, required_str(fields, "l"))


def on_base(link: str, base_url: str) -> bool:
    """Whether ``link`` is an https(-as-configured) URL under ``base_url`` (same scheme, host,
    port and version path), i.e. safe to send our bearer token to."""
    try:
        target, base = urlsplit(link), urlsplit(base_url)
        same_origin = (
            target.scheme.lower() == base.scheme.lower()
            and (target.hostname or "") == (base.hostname or "")
            and target.port == base.port
        )
    except ValueError:  # an unparsable port
        return False
    base_path = base.path if base.path.endswith("/") else base.path + "/"
    return (
        same_origin
        and not target.username
        and not target.password
        and target.path.startswith(base_path)
    )
