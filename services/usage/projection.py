"""The DuckDB usage projection: UsageRecorded events, in event-store order, answer cost queries."""

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, TypeAlias

import duckdb

from llmbus.services.usage.queries import query_sql
from llmbus.services.usage.recordable import Unrecordable, out_of_bounds
from llmbus.shared.contracts.usage import UsageQuery, UsageQueryResult, UsageRecorded
from llmbus.shared.errors import LlmbusError

log = logging.getLogger("llmbus.usage.projection")
STATE_NAME = "usage"
Stored: TypeAlias = UsageRecorded | Unrecordable
OnSkip = Callable[[int, Unrecordable], None]  # an event's position, and why it is skipped
# what DuckDB (or the appender's conversion from Python) raises for a value it cannot hold
ROW_ERRORS = (duckdb.DataError, duckdb.InvalidInputException, OverflowError, UnicodeError)

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

    def apply(self, batch: Sequence[tuple[int, Stored]], on_skip: OnSkip | None = None) -> int:
        """Project a batch; returns how many rows it added. An event the projection cannot
        hold is skipped, logged once and passed to `on_skip`; the position moves past it, so
        it never holds up the events after it."""
        try:
            return self._apply(batch, on_skip)
        except ROW_ERRORS:
            # a value the bounds did not foresee: find its event, one at a time
            return sum(self._apply_one(item, on_skip) for item in batch)

    def _apply(self, batch: Sequence[tuple[int, Stored]], on_skip: OnSkip | None) -> int:
        # Rows and position commit together: a crash leaves neither, so every event lands once.
        with self._transaction():
            # Read inside the transaction: another connection to this file may have applied.
            start = self._stored_position()
            position, rows, skipped = _rows_after(start, batch)
            if rows:
                with self._con.appender("usage") as appender:
                    appender.append_rows(rows)
            if position > start:
                self._con.execute(
                    "UPDATE projection_state SET position = ? WHERE name = ?",
                    [position, STATE_NAME],
                )
        self._position = position
        for event_position, event in skipped:
            log.warning(
                "usage event %s (position %d) not projected: %s",
                event.usage_id, event_position, event.reason,
            )  # fmt: skip
            if on_skip is not None:
                on_skip(event_position, event)
        return len(rows)

    def _apply_one(self, item: tuple[int, Stored], on_skip: OnSkip | None) -> int:
        try:
            return self._apply([item], on_skip)
        except ROW_ERRORS as exc:
            position, event = item
            assert isinstance(event, UsageRecorded)
            reason = f"DuckDB refused it: {type(exc).__name__}: {exc}"[:300]
            return self._apply([(position, Unrecordable.of(event, reason))], on_skip)

    def query(self, q: UsageQuery) -> UsageQueryResult:
        sql, params, columns = query_sql(q)
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
    events: Iterable[tuple[int, Stored]],
    on_progress: Callable[[int], None] | None = None,
    batch_size: int = 5000,
    on_skip: OnSkip | None = None,
) -> int:
    projection.reset()
    applied = 0
    for batch in _batches(events, batch_size):
        applied += projection.apply(batch, on_skip)
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


def _rows_after(
    position: int, batch: Sequence[tuple[int, Stored]]
) -> tuple[int, list[tuple[Any, ...]], list[tuple[int, Unrecordable]]]:
    """The rows of the events after `position`, the position of the last, and those skipped."""
    rows: list[tuple[Any, ...]] = []
    skipped: list[tuple[int, Unrecordable]] = []
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
        if isinstance(event, Unrecordable):
            skipped.append((event_position, event))
        elif (reason := out_of_bounds(event)) is not None:
            skipped.append((event_position, Unrecordable.of(event, reason)))
        else:
            rows.append(_row(event_position, event))
    return last, rows, skipped


def _row(position: int, e: UsageRecorded) -> tuple[Any, ...]:
    # The appender converts an aware occurred_at to UTC and keeps a naive one as UTC.
    return (
        position, e.usage_id, e.request_id, e.provider, e.model,
        e.user_id, e.team_id, e.project_id, e.conversation_id,
        e.role, e.prompt_key, e.prompt_version, e.status, e.error_type,
        e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.total_tokens,
        e.cost_usd, e.latency_ms, e.occurred_at, e.tags,
    )  # fmt: skip


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _batches(events: Iterable[tuple[int, Stored]], size: int) -> Iterator[list[tuple[int, Stored]]]:
    iterator = iter(events)
    while batch := list(islice(iterator, size)):
        yield batch
