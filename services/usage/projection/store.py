"""The DuckDB usage projection: UsageRecorded events, in event-store order, answer cost queries."""

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, TypeAlias

import duckdb

from llmbus.services.usage.projection import reprice
from llmbus.services.usage.projection.export import page as export_page
from llmbus.services.usage.projection.query import plan
from llmbus.services.usage.projection.reprice import Pricing
from llmbus.services.usage.projection.rollup import merge_appended, reprice_rows
from llmbus.services.usage.projection.schema import (
    OCCURRED_AT,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    row,
)
from llmbus.services.usage.recordable import Repriced, Unrecordable, out_of_bounds
from llmbus.shared.contracts.prices import RepriceRequest, RepriceRow
from llmbus.shared.contracts.usage import UsageQuery, UsageQueryResult, UsageRecorded
from llmbus.shared.contracts.usage_rows import UsageRows, UsageRowsQuery
from llmbus.shared.errors import LlmbusError

log = logging.getLogger("llmbus.usage.projection")
STATE_NAME = "usage"
SCHEMA_NAME = "schema"  # its position column holds the SCHEMA_VERSION the file was built with
# DuckDB spills what does not fit: the usage service stays small at any number of rows
MEMORY_LIMIT = "512MB"
# DuckDB checkpoints when its WAL reaches this (default 16 MB). At 10 M rows each checkpoint
# costs about a second, and at the default one came every few batches: ingest at that size
# went from 30 k to 41 k events/s with this (bench/analytics.py). A restart replays at most
# this much WAL.
CHECKPOINT_THRESHOLD = "256MB"
Stored: TypeAlias = UsageRecorded | Unrecordable | Repriced
OnSkip = Callable[[int, Unrecordable], None]  # an event's position, and why it is skipped
# what DuckDB (or the appender's conversion from Python) raises for a value it cannot hold
ROW_ERRORS = (duckdb.DataError, duckdb.InvalidInputException, OverflowError, UnicodeError)

TABLES_SQL = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'projection_state'"
VERSION_SQL = "SELECT coalesce(max(position), 0) FROM projection_state WHERE name = ?"


class ProjectionLockedError(LlmbusError):
    """Another process holds the DuckDB file of the usage projection."""


class UsageProjection:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(self.path)
        self._con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self._con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        if self._scalar(TABLES_SQL) == 0:
            self.reset()  # a new file
        elif self._scalar(VERSION_SQL, [SCHEMA_NAME]) != SCHEMA_VERSION:
            log.warning("%s holds another version of the usage projection: rebuilding it from "
                        "the event store", self.path)  # fmt: skip
            self.reset()
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
        """Project a batch (calls, and repricings of calls); returns how many rows it added. An
        event the projection cannot hold is skipped, logged once and passed to `on_skip`; the
        position moves past it, so it never holds up the events after it."""
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
            position, rows, skipped, repriced = _rows_after(start, batch)
            if rows:
                with self._con.appender("usage") as appender:
                    appender.append_rows(rows)
                merge_appended(self._con, start, position, _first_hour(rows))
            if repriced:  # after the rows: a call and its repricing may come in one batch
                reprice_rows(self._con, repriced)
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
            if not isinstance(event, UsageRecorded):
                raise
            reason = f"DuckDB refused it: {type(exc).__name__}: {exc}"[:300]
            return self._apply([(position, Unrecordable.of(event, reason))], on_skip)

    def query(self, q: UsageQuery, allow_rollup: bool = True) -> UsageQueryResult:
        # One snapshot, so events_projected describes exactly the rows that were summed.
        with self._transaction():
            span = self._con.execute("SELECT min(hour), max(hour) FROM usage_hourly").fetchall()
            found = plan(q, span[0], allow_rollup)
            records = self._con.execute(found.sql, found.params).fetchall()
            projected = self.count()
        rows = [dict(zip(found.columns, map(_plain, record), strict=True)) for record in records]
        return UsageQueryResult(columns=found.columns, rows=rows, events_projected=projected)

    def rows(self, q: UsageRowsQuery, max_bytes: int) -> UsageRows:
        """A page of an export (export.py), read in one snapshot with its count."""
        with self._transaction():
            return export_page(self._con, q, max_bytes, self._stored_position())

    def reprice_summary(
        self, request: RepriceRequest, pricing: Pricing, through: int
    ) -> list[RepriceRow]:
        return reprice.summary(self._con, request, pricing, through)

    def reprice_changed(
        self, request: RepriceRequest, pricing: Pricing, through: int, after: int, limit: int
    ) -> list[tuple[int, str, str, Decimal, Decimal]]:
        return reprice.changed_after(self._con, request, pricing, through, after, limit)

    def reset(self) -> None:
        with self._transaction():
            self._con.execute("; ".join(f"DROP TABLE IF EXISTS {table}" for table in TABLES))
            self._con.execute(SCHEMA)
            self._con.execute(
                "INSERT INTO projection_state VALUES (?, 0), (?, ?)",
                [STATE_NAME, SCHEMA_NAME, SCHEMA_VERSION],
            )
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


def _rows_after(position: int, batch: Sequence[tuple[int, Stored]]) -> tuple[
    int, list[tuple[Any, ...]], list[tuple[int, Unrecordable]], dict[int, Repriced]
]:  # fmt: skip
    """The rows of the events after `position`, the position of the last, those skipped, and
    the repricings by the position of the call each reprices (the last one of a call wins)."""
    rows: list[tuple[Any, ...]] = []
    skipped: list[tuple[int, Unrecordable]] = []
    repriced: dict[int, Repriced] = {}
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
        if isinstance(event, Repriced):
            repriced[event.call_position] = event
        elif isinstance(event, Unrecordable):
            skipped.append((event_position, event))
        elif (reason := out_of_bounds(event)) is not None:
            skipped.append((event_position, Unrecordable.of(event, reason)))
        else:
            rows.append(row(event_position, event))
    return last, rows, skipped, repriced


def _first_hour(rows: list[tuple[Any, ...]]) -> datetime:
    """The earliest hour of these rows' times, as naive UTC (how occurred_at is stored)."""
    first = min(_utc(r[OCCURRED_AT]) for r in rows)
    return first.replace(minute=0, second=0, microsecond=0)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _batches(events: Iterable[tuple[int, Stored]], size: int) -> Iterator[list[tuple[int, Stored]]]:
    iterator = iter(events)
    while batch := list(islice(iterator, size)):
        yield batch
