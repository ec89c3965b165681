"""Keeping usage_hourly in step with `usage`: the rows a batch appended are summed per hour and
merged in, in the batch's own transaction, so the rollup never disagrees with the rows."""

import duckdb

from llmbus.services.usage.projection.schema import PARTIALS, ROLLUP_COLUMNS

KEYS = ["hour", *ROLLUP_COLUMNS.values()]
_SUMS = ", ".join(f"{expression} AS {name}" for name, expression in PARTIALS.items())
_MATCH = " AND ".join(f"r.{key} IS NOT DISTINCT FROM b.{key}" for key in KEYS)
_ADD = ", ".join(f"{name} = r.{name} + b.{name}" for name in PARTIALS)

# The appended rows are found by position, which only grows: DuckDB's zone maps skip the rest.
MERGE_APPENDED = f"""
MERGE INTO usage_hourly AS r
USING (
    SELECT date_trunc('hour', occurred_at) AS hour, {", ".join(ROLLUP_COLUMNS.values())}, {_SUMS}
    FROM usage WHERE position > ? AND position <= ? GROUP BY ALL
) AS b
ON {_MATCH}
WHEN MATCHED THEN UPDATE SET {_ADD}
WHEN NOT MATCHED THEN INSERT BY NAME
"""


def merge_appended(con: duckdb.DuckDBPyConnection, after: int, through: int) -> None:
    """Add the rows with positions in (after, through] to usage_hourly."""
    con.execute(MERGE_APPENDED, [after, through])
