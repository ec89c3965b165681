"""Where a budget's window begins: the local midnight that starts its day, week or month."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from llmbus.shared.contracts.budget import Window, zone

LIFETIME_START = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(window: Window, timezone: str, at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"time {at} has no timezone")
    if window == "lifetime":
        return LIFETIME_START
    tz = zone(timezone)
    day = at.astimezone(tz).date()
    first = {
        "daily": day,
        "weekly": day - timedelta(days=day.weekday()),
        "monthly": day.replace(day=1),
    }
    return local_midnight(first[window], tz)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # fold=0 maps a midnight lost to DST onto the gap's start, the first instant of that day.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
