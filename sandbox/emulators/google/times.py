"""RFC 3339 and EventDateTime conversions (pure).

Invariants: every datetime leaving this module is timezone-aware; all-day values stay ``date``;
``dateTime`` strings carry an explicit offset, as Google writes them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EventTime = datetime | date


def format_utc(moment: datetime) -> str:
    """``2026-03-23T08:00:00.000Z``: the form Google uses for created/updated."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.astimezone(UTC).microsecond // 1000:03d}Z"
    )


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp that must carry an offset; raise ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("offset required")
    return moment


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raise ValueError for unknown names."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def parse_event_time(value: Any, default_tz: str) -> tuple[EventTime, str]:
    """EventDateTime dict to (aware datetime in its zone | date, zone name); ValueError if bad."""
    if not isinstance(value, dict):
        raise ValueError("start/end must be objects")
    tz_name = value.get("timeZone") or default_tz
    if not isinstance(tz_name, str):
        raise ValueError("timeZone must be a string")
    tz = zone(tz_name)
    if value.get("date") is not None:
        return date.fromisoformat(str(value["date"])), tz_name
    raw = value.get("dateTime")
    if not isinstance(raw, str):
        raise ValueError("dateTime or date required")
    moment = datetime.fromisoformat(raw.replace("z", "Z"))
    if moment.tzinfo is None:
        if not value.get("timeZone"):
            raise ValueError("a time zone offset is required unless timeZone is given")
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(tz), tz_name


def format_event_time(value: EventTime, tz_name: str | None) -> dict[str, Any]:
    """An EventDateTime dict: ``date`` for all-day, else ``dateTime`` with offset (+ timeZone)."""
    if not isinstance(value, datetime):
        return {"date": value.isoformat()}
    shown = value.astimezone(zone(tz_name)) if tz_name else value
    out: dict[str, Any] = {"dateTime": shown.isoformat(timespec="seconds")}
    if tz_name:
        out["timeZone"] = tz_name
    return out


def instant(value: EventTime, tz_name: str) -> datetime:
    """The moment a value starts; an all-day date starts at midnight in ``tz_name``."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), tzinfo=zone(tz_name))
