"""Expansion of a recurring event's RRULE/EXRULE/RDATE/EXDATE lines into occurrences (pure).

Invariants: timed series expand on wall-clock time in the series' own IANA zone, so a 09:00
meeting stays 09:00 local across DST; all-day series expand on dates; results are sorted by
original start and lie within the requested window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from dateutil import rrule

from .times import EventTime, zone

_UNTIL = re.compile(r"UNTIL=(\d{8})(T\d{6})?(Z)?", re.IGNORECASE)


@dataclass(frozen=True)
class Occurrence:
    """One instance of a series: its original start and its (unmodified) start and end."""

    original_start: EventTime
    start: EventTime
    end: EventTime


def instance_id(master_id: str, original_start: EventTime) -> str:
    """``<master>_<YYYYMMDDTHHMMSSZ>`` for timed series, ``<master>_<YYYYMMDD>`` for all-day."""
    if isinstance(original_start, datetime):
        return f"{master_id}_{original_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"{master_id}_{original_start:%Y%m%d}"


def parse_instance_suffix(suffix: str, tz_name: str) -> EventTime:
    """Inverse of :func:`instance_id`'s suffix; raise ValueError for anything else."""
    if re.fullmatch(r"\d{8}T\d{6}Z", suffix):
        moment = datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return moment.astimezone(zone(tz_name))
    if re.fullmatch(r"\d{8}", suffix):
        return datetime.strptime(suffix, "%Y%m%d").date()
    raise ValueError("not an instance suffix")


def validate(lines: Sequence[str], start: EventTime, tz_name: str) -> None:
    """Raise ValueError if ``lines`` are not valid recurrence lines for this start."""
    _ruleset(lines, _dtstart(start, tz_name), tz_name)


def expand(
    lines: Sequence[str],
    start: EventTime,
    end: EventTime,
    tz_name: str,
    window: tuple[datetime, datetime],
) -> list[Occurrence]:
    """Occurrences whose start lies in ``[window[0], window[1])`` (aware UTC datetimes)."""
    dtstart = _dtstart(start, tz_name)
    ruleset = _ruleset(lines, dtstart, tz_name)
    duration = _dtstart(end, tz_name) - dtstart
    if isinstance(start, datetime):
        low, high = window[0], window[1]
    else:
        # All-day series expand on naive midnights; compare against the window on dates.
        low = datetime.combine(window[0].date(), time())
        high = datetime.combine(window[1].date(), time()) + timedelta(days=1)
    occurrences = []
    for moment in ruleset.between(low, high, inc=True):
        if moment >= high:
            continue
        if isinstance(start, datetime):
            occurrences.append(Occurrence(moment, moment, moment + duration))
        else:
            day = moment.date()
            occurrences.append(Occurrence(day, day, (moment + duration).date()))
    return occurrences


def _dtstart(value: EventTime, tz_name: str) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(zone(tz_name))
    return datetime.combine(value, time())


def _ruleset(lines: Sequence[str], dtstart: datetime, tz_name: str) -> rrule.rruleset:
    ruleset = rrule.rruleset()
    ruleset.rdate(dtstart)
    has_rule = False
    for raw in lines:
        name, _, rest = raw.strip().partition(":")
        head = name.split(";")[0].upper()
        if head in ("RRULE", "EXRULE"):
            rule = rrule.rrulestr(_fix_until(rest, dtstart, tz_name), dtstart=dtstart)
            if not isinstance(rule, rrule.rrule):
                raise ValueError(f"one rule per line: {raw!r}")
            if head == "RRULE":
                ruleset.rrule(rule)
                has_rule = True
            else:
                ruleset.exrule(rule)
        elif head in ("RDATE", "EXDATE"):
            for moment in _date_values(name, rest, dtstart, tz_name):
                (ruleset.rdate if head == "RDATE" else ruleset.exdate)(moment)
        else:
            raise ValueError(f"unsupported recurrence line {raw!r}")
    if not has_rule and not any(line.upper().startswith("RDATE") for line in lines):
        raise ValueError("a recurrence needs an RRULE or RDATE line")
    return ruleset


def _fix_until(rule: str, dtstart: datetime, tz_name: str) -> str:
    """Make UNTIL agree with dtstart's awareness, as dateutil requires (UTC for aware starts)."""

    def repl(match: re.Match[str]) -> str:
        day, clock, utc = match.group(1), match.group(2), match.group(3)
        if dtstart.tzinfo is None:
            return f"UNTIL={day}{clock or 'T235959'}"
        if utc:
            return match.group(0)
        local = datetime.strptime(day + (clock or "T235959"), "%Y%m%dT%H%M%S")
        moment = local.replace(tzinfo=zone(tz_name)).astimezone(UTC)
        return f"UNTIL={moment:%Y%m%dT%H%M%S}Z"

    return _UNTIL.sub(repl, rule)


def _date_values(name: str, rest: str, dtstart: datetime, tz_name: str) -> list[datetime]:
    params = dict(p.split("=", 1) for p in name.split(";")[1:] if "=" in p)
    value_zone = zone(params.get("TZID", tz_name))
    out = []
    for raw in rest.split(","):
        text = raw.strip()
        if re.fullmatch(r"\d{8}", text):
            day = datetime.strptime(text, "%Y%m%d")
            # A DATE value on a timed series means the occurrence on that local day.
            moment = day if dtstart.tzinfo is None else datetime.combine(day, dtstart.timetz())
        elif re.fullmatch(r"\d{8}T\d{6}Z?", text):
            moment = datetime.strptime(text[:15], "%Y%m%dT%H%M%S")
            if dtstart.tzinfo is not None:
                moment = moment.replace(tzinfo=UTC if text.endswith("Z") else value_zone)
        else:
            raise ValueError(f"bad date value {text!r}")
        out.append(moment)
    return out
