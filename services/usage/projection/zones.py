"""Local time for usage queries in a timezone other than UTC: query bounds read in that zone,
and a calendar of local times that a query joins instead of converting every row."""

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# first and last hour (UTC) with usage, from usage_hourly; None when there is none
Span = tuple[datetime | None, datetime | None]
HOUR = timedelta(hours=1)
# every timezone's offset is a multiple of 15 minutes, so 15-minute slots map exactly
SLOT = timedelta(minutes=15)


def to_utc(moment: datetime | None, zone: str) -> datetime | None:
    """A query bound as naive UTC, as occurred_at is stored; a naive bound is in the query's
    timezone."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC).replace(tzinfo=None)


def whole_hours(zone: str, span: Span, since: datetime | None, until: datetime | None) -> bool:
    """Whether every local hour in the range starts on a UTC hour (most zones; not India's or
    Nepal's), so that hourly sums can be put into local days. Offsets change at most a few times
    a year, so one look a day finds any that lasts."""
    lo, hi = _range(span, since, until, HOUR)
    info = ZoneInfo(zone)
    days = (hi - lo) // timedelta(days=1)
    moments = [lo + timedelta(days=day) for day in range(days + 1)] + [hi]
    return all(_whole_hour_offset(moment, info) for moment in moments)


def _whole_hour_offset(moment: datetime, zone: ZoneInfo) -> bool:
    offset = moment.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    return offset is not None and offset.total_seconds() % 3600 == 0


def calendar_sql(
    zone: str, span: Span, since: datetime | None, until: datetime | None, hourly: bool,
    params: list[Any],
) -> tuple[str, str]:  # fmt: skip
    """A `calendar` of (slot, local) rows over the range, and the column to bucket on."""
    step = HOUR if hourly else SLOT
    lo, hi = _range(span, since, until, step)
    interval = "1 HOUR" if hourly else "15 MINUTE"
    params.extend([zone, lo, hi + step])
    cte = (
        "WITH calendar AS (SELECT range AS slot, timezone(?, timezone('UTC', range)) AS local "
        f"FROM range(CAST(? AS TIMESTAMP), CAST(? AS TIMESTAMP), INTERVAL {interval})) "
    )
    return cte, "calendar.local"


def _range(
    span: Span, since: datetime | None, until: datetime | None, step: timedelta
) -> tuple[datetime, datetime]:
    first, last = span
    lo = max(filter(None, (since, first)), default=None)
    hi = min(filter(None, (until, last + HOUR if last else None)), default=None)
    if lo is None or hi is None or hi < lo:
        epoch = datetime(1970, 1, 1)
        return epoch, epoch
    return _floor(lo, step), hi


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1)
    return epoch + ((moment - epoch) // step) * step
