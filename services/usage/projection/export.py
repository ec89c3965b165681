"""The pages of llmbus.usage.rows: the `usage` rows in a range that match filters, keyset-paged on
position, each page cut to fit the NATS server's max_payload.

`WHERE position > ? ORDER BY position LIMIT ?` costs the same at any depth: rows are appended in
position order, so DuckDB's zone maps skip every row group before the cursor. The filters are
those of a usage query (query.where_sql), so an export holds exactly the rows a query sums. In
desc order (the console's latest requests) the cursor goes down: `position < ?`, newest first.
"""

from typing import Any

import duckdb
from pydantic_core import to_json

from llmbus.services.usage.projection.query import where_sql
from llmbus.services.usage.projection.zones import to_utc
from llmbus.shared.contracts import UsageQuery, UsageRows, UsageRowsQuery
from llmbus.shared.contracts.usage_rows import USAGE_ROW_COLUMNS

# room in the reply for all but its rows: {"rows":[...],"next_after":…,"total":…,"through":…}
ENVELOPE_BYTES = 256
# Typed for JSON in SQL, faster than Python per value. Costs travel as floats, as in every llmbus
# contract: below $100,000 a float keeps all ten decimal places, so an export that reads them
# back as DECIMAL(18, 10) sums them exactly. occurred_at is stored as naive UTC, and says so.
WIRE = {
    "cost_usd": "CAST(cost_usd AS DOUBLE)",
    "original_cost_usd": "CAST(original_cost_usd AS DOUBLE)",
    "occurred_at": "strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%fZ')",
}
SELECTED = ", ".join(f"{WIRE.get(name, name)} AS {name}" for name in USAGE_ROW_COLUMNS)


def page_bytes(max_payload: int, header_room: int) -> int:
    """How many bytes a page's rows may take in a reply of at most `max_payload`."""
    return max_payload - header_room - ENVELOPE_BYTES


def page(
    con: duckdb.DuckDBPyConnection, q: UsageRowsQuery, max_bytes: int, position: int
) -> UsageRows:
    """The page after `q.after`: as many rows as `q.limit` allows and `max_bytes` holds (at
    least one). `position` is the projection's; the first page fixes it as the snapshot that
    the next pages read, and counts its rows."""
    through = position if q.through is None else min(q.through, position)
    params: list[Any] = []
    since, until = to_utc(q.since, q.timezone), to_utc(q.until, q.timezone)
    where = where_sql(UsageQuery(filters=q.filters), since, until, False, params)
    where += (" AND " if where else " WHERE ") + "position <= ?"
    params.append(through)
    if q.request_id is not None:
        where += " AND request_id = ?"
        params.append(q.request_id)
    total = None
    if q.through is None:
        total = int(con.execute(f"SELECT count(*) FROM usage{where}", params).fetchall()[0][0])
    # one row more than the page takes says whether another page follows
    cursor, at = _cursor(q)
    records = con.execute(
        f"SELECT position, {SELECTED} FROM usage{where}{cursor} LIMIT ?",
        [*params, *at, q.limit + 1],
    ).fetchall()
    rows, last = _fit(records[: q.limit], max_bytes)
    more = len(rows) < len(records)
    return UsageRows(rows=rows, next_after=last if more else None, total=total, through=through)


def _cursor(q: UsageRowsQuery) -> tuple[str, list[int]]:
    """Where the page starts and which way it reads, and its parameter: asc after the cursor;
    desc from the newest (after 0), else below the cursor."""
    if q.order == "asc":
        return " AND position > ? ORDER BY position", [q.after]
    if q.after:
        return " AND position < ? ORDER BY position DESC", [q.after]
    return " ORDER BY position DESC", []


def _fit(records: list[tuple[Any, ...]], max_bytes: int) -> tuple[list[dict[str, Any]], int]:
    """The first records whose JSON fits `max_bytes` (measured as the reply encodes them), and
    the position of the last taken."""
    rows: list[dict[str, Any]] = []
    used, last = 0, 0
    for position, *values in records:
        row = dict(zip(USAGE_ROW_COLUMNS, values, strict=True))
        size = len(to_json(row)) + 1  # and its comma
        if rows and used + size > max_bytes:
            break
        rows.append(row)
        used += size
        last = position
    return rows, last
