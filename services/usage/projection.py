"""The DuckDB usage projection: UsageRecorded events, in event-store order, answer cost queries."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb

from llmbus.shared.contracts.usage import UsageQuery, UsageQueryResult, UsageRecorded
from llmbus.shared.errors import LlmbusError

STATE_NAME = "usage"

# cost_usd is an exact DECIMAL so sums do not depend on aggregation order: a rebuild must
# give bit-identical answers. occurred_at is a TIMESTAMP holding UTC, so day/week/month
# buckets never depend on the session's TimeZone setting.
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    position BIGINT NOT NULL,
    usage_id VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    user_id VARCHAR,
    team_id VARCHAR,
    project_id VARCHAR,
    conversation_id VARCHAR,
    role VARCHAR,
    prompt_key VARCHAR,
    prompt_version INTEGER,
    status VARCHAR NOT NULL,
    error_type VARCHAR,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    cost_usd DECIMAL(18, 10) NOT NULL,
    latency_ms DOUBLE NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    tags VARCHAR[] NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_state (
    name VARCHAR PRIMARY KEY,
    position BIGINT NOT NULL
);
"""

COLUMNS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "team": "team_id",
    "project": "project_id",
    "conversation": "conversation_id",
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


class ProjectionLockedError(LlmbusError):
    """Another process holds the DuckDB file of the usage projection."""


class UsageProjection:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(self.path)
        self._con.execute(SCHEMA)
        self._con.execute(
            "INSERT INTO projection_state VALUES (?, 0) ON CONFLICT DO NOTHING", [STATE_NAME]
        )
        # Cached so callers on other threads can read it without touching the connection.
        self._position = self._stored_position()

    def __enter__(self) -> "UsageProjection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def position(self) -> int:
        return self._position

    def apply(self, batch: Sequence[tuple[int, UsageRecorded]]) -> int:
        # Rows and position commit together: a crash leaves neither, so every event lands once.
        with self._transaction():
            # Read inside the transaction: another connection to this file may have applied.
            position = self._stored_position()
            rows = _rows_after(position, batch)
            if rows:
                position = rows[-1][0]
                with self._con.appender("usage") as appender:
                    appender.append_rows(rows)
                self._con.execute(
                    "UPDATE projection_state SET position = ? WHERE name = ?",
                    [position, STATE_NAME],
                )
        self._position = position
        return len(rows)

    def query(self, q: UsageQuery) -> UsageQueryResult:
        sql, params, columns = _query_sql(q)
        # One snapshot, so events_projected describes exactly the rows that were summed.
        with self._transaction():
            records = self._con.execute(sql, params).fetchall()
            projected = self.count()
        rows = [dict(zip(columns, map(_plain, record), strict=True)) for record in records]
        return UsageQueryResult(columns=columns, rows=rows, events_projected=projected)

    def reset(self) -> None:
        with self._transaction():
            self._con.execute("DROP TABLE usage; DROP TABLE projection_state")
            self._con.execute(SCHEMA)
            self._con.execute("INSERT INTO projection_state VALUES (?, 0)", [STATE_NAME])
        self._position = 0

    def count(self) -> int:
        return self._scalar("SELECT count(*) FROM usage")

    def close(self) -> None:
        self._con.close()

    def _stored_position(self) -> int:
        return self._scalar("SELECT position FROM projection_state WHERE name = ?", [STATE_NAME])

    def _scalar(self, sql: str, params: list[Any] | None = None) -> int:
        # fetchall, not fetchone: DuckDB 2.0 refuses other work while a result is unfinished.
        rows = self._con.execute(sql, params).fetchall()
        return int(rows[0][0]) if rows else 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._con.begin()
        try:
            yield
        except BaseException:
            self._con.rollback()
            raise
        self._con.commit()


def rebuild(
    projection: UsageProjection,
    events: Iterable[tuple[int, UsageRecorded]],
    on_progress: Callable[[int], None] | None = None,
    batch_size: int = 5000,
) -> int:
    projection.reset()
    applied = 0
    for batch in _batches(events, batch_size):
        applied += projection.apply(batch)
        if on_progress is not None:
            on_progress(applied)
    return applied


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise ProjectionLockedError(
            f"The usage projection {path} is open in another process. The usage service "
            "owns this file: ask it over llmbus.usage.query, or stop it before a rebuild. "
            f"({exc})"
        ) from exc


def _rows_after(position: int, batch: Sequence[tuple[int, UsageRecorded]]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    last = position
    for event_position, event in batch:
        if event_position <= position:
            continue
        if event_position <= last:
            raise ValueError(
                f"usage events must come in increasing position order: {event_position} "
                f"follows {last}"
            )
        last = event_position
        rows.append(_row(event_position, event))
    return rows


def _row(position: int, e: UsageRecorded) -> tuple[Any, ...]:
    # The appender converts an aware occurred_at to UTC and keeps a naive one as UTC.
    return (
        position, e.usage_id, e.request_id, e.provider, e.model,
        e.user_id, e.team_id, e.project_id, e.conversation_id,
        e.role, e.prompt_key, e.prompt_version, e.status, e.error_type,
        e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.total_tokens,
        e.cost_usd, e.latency_ms, e.occurred_at, e.tags,
    )  # fmt: skip


def _query_sql(q: UsageQuery) -> tuple[str, list[Any], list[str]]:
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
            raise ValueError(
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


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _batches(
    events: Iterable[tuple[int, UsageRecorded]], size: int
) -> Iterator[list[tuple[int, UsageRecorded]]]:
    iterator = iter(events)
    while batch := list(islice(iterator, size)):
        yield batch
