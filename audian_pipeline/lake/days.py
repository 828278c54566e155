"""The lake's unit of time: one UTC day, as a half-open interval [start, end)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)
