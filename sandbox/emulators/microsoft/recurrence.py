"""Expansion of a Graph ``patternedRecurrence`` into occurrences (pure).

Invariants: a series expands on wall-clock time in its own zone (``start.timeZone`` or the
range's ``recurrenceTimeZone``), so a 09:00 meeting stays 09:00 local across DST; the first
occurrence is on or after ``range.startDate``; ``endDate`` is inclusive; results are sorted and
lie within the requested window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from dateutil import rrule

from .times import zone

_DAYS = {
    "monday": rrule.MO,
    "tuesday": rrule.TU,
    "wednesday": rrule.WE,
    "thursday": rrule.TH,
    "friday": rrule.FR,
    "saturday": rrule.SA,
    "sunday": rrule.SU,
}
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
PATTERN_TYPES = frozenset(
    {
        "daily",
        "weekly",
        "absoluteMonthly",
        "relativeMonthly",
        "absoluteYearly",
        "relativeYearly",
    }
)
RANGE_TYPES = frozenset({"endDate", "noEnd", "numbered"})


@dataclass(frozen=True)
class Occurrence:
    """One instance of a series: its original start and its (unmodified) start and end."""

    original_start: datetime
    start: datetime
    end: datetime


def validate(recurrence: Any, start: datetime) -> None:
    """Raise ValueError unless ``recurrence`` is a valid patternedRecurrence for this start."""
    _rule(recurrence, start)


def expand(
    recurrence: dict[str, Any],
    start: datetime,
    end: datetime,
    window: tuple[datetime, datetime],
) -> list[Occurrence]:
    """Occurrences overlapping ``[window[0], window[1])`` (aware datetimes)."""
    rule = _rule(recurrence, start)
    duration = end - start
    low = window[0] - duration
    out = []
    for moment in rule.between(low, window[1], inc=True):
        occ_end = moment + duration
        if moment < window[1] and (occ_end > window[0] or moment >= window[0]):
            out.append(Occurrence(moment, moment, occ_end))
    return out


def _rule(recurrence: Any, start: datetime) -> rrule.rrule:
    if not isinstance(recurrence, dict):
        raise ValueError("recurrence must be an object")
    pattern, rng = recurrence.get("pattern"), recurrence.get("range")
    if not isinstance(pattern, dict) or not isinstance(rng, dict):
        raise ValueError("recurrence needs pattern and range")
    kind, range_kind = pattern.get("type"), rng.get("type")
    if kind not in PATTERN_TYPES or range_kind not in RANGE_TYPES:
        raise ValueError("unsupported pattern or range type")
    # ``start`` is already in the series' zone; an explicit recurrenceTimeZone wins.
    tz_name = rng.get("recurrenceTimeZone")
    local = start.astimezone(zone(str(tz_name))) if tz_name else start
    start_date = date.fromisoformat(str(rng.get("startDate") or local.date().isoformat()))
    dtstart = datetime.combine(start_date, local.timetz())
    interval = int(pattern.get("interval") or 1)
    if interval < 1:
        raise ValueError("interval must be positive")
    args: dict[str, Any] = {"dtstart": dtstart, "interval": interval}
    days = [_DAYS[str(d).lower()] for d in pattern.get("daysOfWeek") or []]
    index = _INDEX.get(str(pattern.get("index") or "first").lower(), 1)
    freq: Literal[0, 1, 2, 3, 4, 5, 6] = rrule.DAILY
    if kind == "weekly":
        if not days:
            raise ValueError("weekly needs daysOfWeek")
        freq = rrule.WEEKLY
        args["byweekday"] = days
        args["wkst"] = _DAYS[str(pattern.get("firstDayOfWeek") or "sunday").lower()]
    elif kind == "absoluteMonthly":
        freq = rrule.MONTHLY
        args["bymonthday"] = int(pattern["dayOfMonth"])
    elif kind == "relativeMonthly":
        freq = rrule.MONTHLY
        args.update(_relative(days, index))
    elif kind == "absoluteYearly":
        freq = rrule.YEARLY
        args["bymonth"], args["bymonthday"] = int(pattern["month"]), int(pattern["dayOfMonth"])
    elif kind == "relativeYearly":
        freq = rrule.YEARLY
        args["bymonth"] = int(pattern["month"])
        args.update(_relative(days, index))
    if range_kind == "endDate":
        last = date.fromisoformat(str(rng["endDate"]))
        # endDate is inclusive: anything starting that local day belongs to the series.
        args["until"] = datetime.combine(last + timedelta(days=1), local.timetz()) - timedelta(
            microseconds=1
        )
    elif range_kind == "numbered":
        count = int(rng["numberOfOccurrences"])
        if count < 1:
            raise ValueError("numberOfOccurrences must be positive")
        args["count"] = count
    return rrule.rrule(freq, **args)


def _relative(days: list[rrule.weekday], index: int) -> dict[str, Any]:
    if not days:
        raise ValueError("relative patterns need daysOfWeek")
    if len(days) == 1:
        return {"byweekday": [days[0](index)]}
    return {"byweekday": days, "bysetpos": index}
