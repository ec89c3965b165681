"""The SQL that answers a UsageQuery from the projection's `usage` table."""

from datetime import UTC, datetime
from typing import Any

from llmbus.shared.contracts.usage import UsageQuery
from llmbus.shared.errors import InvalidRequestError

COLUMNS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "team": "team_id",
    "project": "project_id",
    "conversation": "conversation_id",
    "role": "role",
    "status": "status",
    "prompt": "prompt_key",
    # one label per version, e.g. "summarizer@3": a version number means nothing without its key
    "prompt_version": "(prompt_key || '@' || CAST(prompt_version AS VARCHAR))",
}
# Grouping on a DATE and formatting the few resulting rows is much cheaper than grouping
# on formatted strings; dates and their labels sort alike.
TIME_BUCKETS = {
    "day": ("occurred_at::DATE", "%Y-%m-%d"),
    "week": ("date_trunc('week', occurred_at)::DATE", "%Y-%m-%d"),
    "month": ("date_trunc('month', occurred_at)::DATE", "%Y-%m"),
}
AGGREGATES = {
    "requests": "count(*)",
    "errors": "count(*) FILTER (WHERE status = 'error')",
    "prompt_tokens": "coalesce(sum(prompt_tokens), 0)",
    "completion_tokens": "coalesce(sum(completion_tokens), 0)",
    "cached_tokens": "coalesce(sum(cached_tokens), 0)",
    "total_tokens": "coalesce(sum(total_tokens), 0)",
    "cost_usd": "coalesce(sum(cost_usd), 0)",
    # quantile_disc picks stored values, so a rebuild gives the same figures; one call, one sort.
    "latency": "quantile_disc(latency_ms, [0.5, 0.95])",
}
METRICS = {
    **{name: name for name in AGGREGATES if name != "latency"},
    "latency_ms_p50": "latency[1]",
    "latency_ms_p95": "latency[2]",
}


def query_sql(q: UsageQuery) -> tuple[str, list[Any], list[str]]:
    groups: list[str] = list(dict.fromkeys(q.group_by))
    where, params = _where(q)
    keys = [f'{_group_key(g)} AS "{g}"' for g in groups]
    aggregates = [f"{expression} AS {name}" for name, expression in AGGREGATES.items()]
    grouped = f"SELECT {', '.join([*keys, *aggregates])} FROM usage{where}"
    if groups:
        grouped += " GROUP BY ALL"
    labels = [_group_label(g) for g in groups]
    metrics = [f"{expression} AS {name}" for name, expression in METRICS.items()]
    sql = f"SELECT {', '.join([*labels, *metrics])} FROM ({grouped})"
    if groups:
        sql += " ORDER BY " + ", ".join(_ordering(groups))
    if q.limit is not None:
        sql += " LIMIT ?"
        params.append(q.limit)
    return sql, params, [*groups, *METRICS]


def _group_key(group: str) -> str:
    return TIME_BUCKETS[group][0] if group in TIME_BUCKETS else COLUMNS[group]


def _group_label(group: str) -> str:
    if group in TIME_BUCKETS:
        label_format = TIME_BUCKETS[group][1]
        return f'strftime("{group}", \'{label_format}\') AS "{group}"'
    return f'"{group}"'


def _where(q: UsageQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if q.since is not None:
        clauses.append("occurred_at >= ?")
        params.append(_utc(q.since))
    if q.until is not None:
        clauses.append("occurred_at < ?")
        params.append(_utc(q.until))
    for field, value in q.filters.items():
        if field not in COLUMNS:
            raise InvalidRequestError(
                f"cannot filter on {field!r}: filters take {', '.join(COLUMNS)}; "
                "use since/until for time"
            )
        clauses.append(f"{COLUMNS[field]} = ?")
        params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _ordering(groups: list[str]) -> list[str]:
    times = [f'"{g}" ASC' for g in groups if g in TIME_BUCKETS]
    others = [f'"{g}" ASC NULLS LAST' for g in groups if g not in TIME_BUCKETS]
    return [*times, "cost_usd DESC", *others]


def _utc(moment: datetime) -> datetime:
    # Stored timestamps are naive UTC; a naive bound is taken to be UTC as well.
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
