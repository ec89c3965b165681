"""The SQL that answers a UsageQuery: from usage_hourly when the rollup holds everything the
query asks about (its dimensions, its filters, sums only, whole hours), else from `usage`.

Both read the same sums (schema.PARTIALS), so the two paths give the same answer; the metrics
are computed from those sums in an outer query, where time buckets are labelled too. A query
in another timezone joins a small calendar of local times rather than converting every row.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmbus.services.usage.projection.schema import PARTIALS, ROLLUP_COLUMNS
from llmbus.services.usage.projection.zones import Span, calendar_sql, to_utc, whole_hours
from llmbus.shared.contracts import UsageQuery
from llmbus.shared.errors import InvalidRequestError
from llmbus.shared.usage_groups import FILTER_FIELDS, TIME_FIELDS

COLUMNS = {
    **ROLLUP_COLUMNS,
    "user": "user_id",
    "conversation": "conversation_id",
    "workflow": "workflow_id",
    "tag": "tag",  # one row per tag a request has (see _source)
    # one label per version, e.g. "summarizer@3": a version number means nothing without its key
    "prompt_version": "(prompt_key || '@' || CAST(prompt_version AS VARCHAR))",
}
# Grouping on a DATE or TIMESTAMP and formatting the few resulting rows is much cheaper than
# grouping on formatted strings; the labels sort as their times do.
TIME_BUCKETS = {
    "hour": ("date_trunc('hour', {t})", "%Y-%m-%dT%H:00"),
    "day": ("CAST({t} AS DATE)", "%Y-%m-%d"),
    "week": ("CAST(date_trunc('week', {t}) AS DATE)", "%Y-%m-%d"),
    "month": ("CAST(date_trunc('month', {t}) AS DATE)", "%Y-%m"),
}
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
SUMMED = {
    "requests": ("requests",),
    "errors": ("errors",),
    "error_rate": ("errors", "requests"),
    "prompt_tokens": ("prompt_tokens",),
    "completion_tokens": ("completion_tokens",),
    "cached_tokens": ("cached_tokens",),
    "total_tokens": ("total_tokens",),
    "cost_usd": ("cost_usd",),
    "original_cost_usd": ("original_cost_usd",),
    "latency_ms_mean": ("latency_ms_sum", "requests"),
    "ttft_ms_mean": ("ttft_ms_sum", "ttft_count"),
}
METRIC_SQL = {
    "error_rate": "CASE WHEN requests > 0 THEN round(errors / requests, 6) END",
    "latency_ms_mean": "round(CAST(latency_ms_sum AS DOUBLE) / nullif(requests, 0), 3)",
    "ttft_ms_mean": "round(CAST(ttft_ms_sum AS DOUBLE) / nullif(ttft_count, 0), 3)",
}


@dataclass
class Plan:
    sql: str
    params: list[Any]
    columns: list[str]
    rollup: bool  # answered from usage_hourly


def plan(q: UsageQuery, span: Span, allow_rollup: bool = True) -> Plan:
    """The SQL for `q`. `span` is the first and last hour with usage, which bounds the local-time
    calendar of a query in another timezone. Without `allow_rollup` it reads every row (to check
    one path against the other)."""
    groups: list[str] = list(dict.fromkeys(q.group_by))
    metrics: list[str] = list(dict.fromkeys([*q.metrics, *([q.order_by] if q.order_by else [])]))
    since, until = to_utc(q.since, q.timezone), to_utc(q.until, q.timezone)
    local = q.timezone != "UTC" and any(g in TIME_FIELDS for g in groups)
    rollup = (
        allow_rollup
        and _fits_rollup(q, groups, metrics, since, until)
        and (not local or whole_hours(q.timezone, span, since, until))
    )
    time_column = "hour" if rollup else "occurred_at"
    params: list[Any] = []
    cte = ""
    if local:
        cte, time_column = calendar_sql(q.timezone, span, since, until, rollup, params)
    where = where_sql(q, since, until, rollup, params)
    keys = [f'{_group_key(g, time_column)} AS "{g}"' for g in groups]
    sums = [f"{_sum(name, rollup)} AS {name}" for name in _partials(metrics)]
    sums += _percentiles(metrics) if not rollup else []
    source = _source(groups, rollup, local, where)
    inner = f"SELECT {', '.join([*keys, *sums])} FROM {source}"
    if groups:
        inner += " GROUP BY ALL"
    labels = [_label(g) for g in groups]
    selected = [f'{_metric(m)} AS "{m}"' for m in metrics]
    sql = f"{cte}SELECT {', '.join([*labels, *selected])} FROM ({inner})"
    sql += " ORDER BY " + ", ".join(_ordering(groups, q))
    if q.limit is not None:
        sql += " LIMIT ?"
        params.append(q.limit)
    return Plan(sql, params, [*groups, *metrics], rollup)


def _fits_rollup(
    q: UsageQuery, groups: list[str], metrics: list[str], since: Any, until: Any
) -> bool:
    dimensions = [g for g in groups if g not in TIME_FIELDS] + list(q.filters)
    return (
        all(d in ROLLUP_COLUMNS for d in dimensions)
        and all(m in SUMMED for m in metrics)
        and all(_whole_hour(bound) for bound in (since, until))
    )


def _whole_hour(bound: datetime | None) -> bool:
    return bound is None or (bound.minute, bound.second, bound.microsecond) == (0, 0, 0)


def _partials(metrics: list[str]) -> list[str]:
    # requests and cost are always summed: the default order sorts by cost
    needed = {"requests", "cost_usd"} | {p for m in metrics for p in SUMMED.get(m, ())}
    return [name for name in PARTIALS if name in needed]


def _sum(name: str, rollup: bool) -> str:
    return f"sum({name})" if rollup else PARTIALS[name]


def _percentiles(metrics: list[str]) -> list[str]:
    wanted = []
    for measure in ("latency_ms", "ttft_ms"):
        if any(m.startswith(measure + "_p") for m in metrics):
            # all three at once, one sort; quantile_disc picks stored values, so a rebuild
            # gives the same figures
            wanted.append(f"quantile_disc({measure}, {list(PERCENTILES.values())}) AS {measure}_q")
    return wanted


def _metric(metric: str) -> str:
    if metric in METRIC_SQL:
        return METRIC_SQL[metric]
    if metric in SUMMED:
        return f"coalesce({metric}, 0)"
    measure, point = metric.rsplit("_", 1)
    return f"{measure}_q[{list(PERCENTILES).index(point) + 1}]"


def _group_key(group: str, time_column: str) -> str:
    if group in TIME_BUCKETS:
        return TIME_BUCKETS[group][0].format(t=time_column)
    return COLUMNS[group]


def _label(group: str) -> str:
    if group in TIME_BUCKETS:
        return f'strftime("{group}", \'{TIME_BUCKETS[group][1]}\') AS "{group}"'
    return f'"{group}"'


def where_sql(
    q: UsageQuery, since: datetime | None, until: datetime | None, rollup: bool, params: list[Any]
) -> str:
    """The WHERE clause of q's bounds (UTC) and filters, its values appended to `params`; the
    export and repricing select their rows with it, so they cover what a query sums."""
    clauses: list[str] = []
    moment = "hour" if rollup else "occurred_at"
    for bound, op in ((since, ">="), (until, "<")):
        if bound is not None:
            clauses.append(f"{moment} {op} ?")
            params.append(bound)
    for name, value in q.filters.items():
        if name not in FILTER_FIELDS:
            raise InvalidRequestError(
                f"cannot filter on {name!r}: filters take {', '.join(FILTER_FIELDS)}; "
                "use since/until for time"
            )
        clauses.append("list_contains(tags, ?)" if name == "tag" else f"{COLUMNS[name]} = ?")
        params.append(value)
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def _source(groups: list[str], rollup: bool, local: bool, where: str) -> str:
    table = "usage_hourly" if rollup else "usage"
    if "tag" in groups:
        # a request counts under each of its tags; one without tags, under none (NULL)
        tags = "unnest(CASE WHEN len(tags) = 0 THEN [NULL::VARCHAR] ELSE tags END) AS tag"
        table = f"(SELECT *, {tags} FROM usage{where})"
        where = ""
    if local:
        slot = "hour" if rollup else "time_bucket(INTERVAL 15 MINUTE, occurred_at)"
        table += f" JOIN calendar ON calendar.slot = {slot}"
    return table + where


def _ordering(groups: list[str], q: UsageQuery) -> list[str]:
    times = [f'"{g}" ASC' for g in groups if g in TIME_BUCKETS]
    others = [f'"{g}" ASC NULLS LAST' for g in groups if g not in TIME_BUCKETS]
    if q.order_by is not None:
        direction = "ASC" if q.ascending else "DESC"
        return [f'"{q.order_by}" {direction} NULLS LAST', *times, *others]
    return [*times, "cost_usd DESC", *others]
