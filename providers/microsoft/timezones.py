"""Time zone names Graph uses (Windows names, IANA names, ``UTC``) as IANA names.

Invariants:
- pure: a deterministic function of the name, backed by the CLDR table tzlocal ships
  (``tzlocal.windows_tz.win_tz``) and the system's IANA database (``zoneinfo``);
- a Windows name maps to CLDR's primary IANA zone; an IANA name is returned as it is;
- Graph's UTC spellings (``UTC``, ``tzone://Microsoft/Utc``, ...) map to ``UTC``;
- anything else raises ``UnknownTimeZone`` (a ValueError) naming the zone, never guessing.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

UTC_NAME = "UTC"

# Graph writes UTC in several ways; CLDR would map the Windows "UTC" to "Etc/UTC".
_UTC_ALIASES = frozenset({"utc", "tzone://microsoft/utc", "etc/utc", "z", "gmt"})


class UnknownTimeZone(ValueError):
    """A zone name that is neither a known Windows name nor an IANA name."""


def to_iana(name: str) -> str:
    """The IANA name for a Graph ``timeZone`` value; UnknownTimeZone if there is none."""
    text = name.strip()
    if text.lower() in _UTC_ALIASES:
        return UTC_NAME
    windows = win_tz.get(text)
    if windows is not None:
        return windows
    if text and "\\" not in text:
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a folder
            pass
        else:
            return text
    raise UnknownTimeZone(f"unknown time zone {text[:64]!r}")


def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for a Graph ``timeZone`` value; UnknownTimeZone if there is none."""
    return ZoneInfo(to_iana(name))
