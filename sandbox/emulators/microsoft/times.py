"""Graph ``dateTimeTimeZone`` values, time zone names and timestamps (pure).

Invariants: zone names may be IANA or Windows (mapped through tzlocal's CLDR table); every
datetime leaving this module is aware; ``dateTime`` strings carry no offset and exactly seven
fractional digits, as Graph writes them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

_FRACTION = re.compile(r"^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?$")


class ZoneError(ValueError):
    """A time zone name Graph would not accept."""


def zone(name: str) -> ZoneInfo:
    """The zone for an IANA or Windows name; ZoneError for anything else."""
    if name.strip().upper() in ("UTC", "Z", "COORDINATED UNIVERSAL TIME"):
        return ZoneInfo("UTC")
    iana = win_tz.get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ZoneError(name) from exc


def parse_local(text: str) -> datetime:
    """A naive ``dateTime`` (any number of fractional digits, an offset tolerated and dropped)."""
    raw = text.strip()
    moment = datetime.fromisoformat(_trim_fraction(raw.replace("Z", "").replace("z", "")))
    return moment.replace(tzinfo=None) if moment.tzinfo is None else moment


def parse_date_time_zone(value: Any) -> tuple[datetime, str]:
    """``{dateTime, timeZone}`` to (aware datetime in that zone, the zone name as given)."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise ValueError("dateTime is required")
    tz_name = value.get("timeZone") or "UTC"
    if not isinstance(tz_name, str):
        raise ValueError("timeZone must be a string")
    tz = zone(tz_name)
    moment = parse_local(value["dateTime"])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(tz), tz_name


def format_date_time_zone(moment: datetime, tz_name: str) -> dict[str, str]:
    """``{"dateTime": "2016-12-09T20:30:00.0000000", "timeZone": tz_name}`` in ``tz_name``."""
    local = moment.astimezone(zone(tz_name))
    return {
        "dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0",
        "timeZone": tz_name,
    }


def format_timestamp(moment: datetime) -> str:
    """``2017-10-30T07:43:19.0318281Z``: createdDateTime, lastModifiedDateTime, expirations."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 instant; no offset means UTC (as Graph reads query parameters)."""
    moment = parse_local(text) if "T" in text else datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def inner_date(moment: datetime) -> str:
    """``2020-08-18T12:51:51``: the ``innerError.date`` form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _trim_fraction(text: str) -> str:
    # fromisoformat on 3.11 takes at most 6 fractional digits; Graph sends 7.
    head, sep, tail = text.partition("+")
    if not sep and text.count("-") > 2:
        idx = text.rfind("-")
        head, sep, tail = text[:idx], "-", text[idx + 1 :]
    match = _FRACTION.match(head)
    if match is None:
        return text
    base, fraction = match.group(1), match.group(2)
    out = base + ("." + fraction[:6].ljust(6, "0") if fraction else "")
    return out + (sep + tail if sep else "")
