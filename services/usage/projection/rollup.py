"""Keeping usage_hourly in step with `usage`: the rows a batch appended are summed per hour and
merged in, and a repriced call's difference added to its hour, in the batch's own transaction,
so the rollup never disagrees with the rows."""

from collections.abc import Mapping
from datetime import datetime

import duckdb

from llmbus.services.usage.projection.schema import PARTIALS, ROLLUP_COLUMNS
from llmbus.services.usage.recordable import Repriced

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
ON r.hour >= ? AND {_MATCH}
WHEN MATCHED THEN UPDATE SET {_ADD}
WHEN NOT MATCHED THEN INSERT BY NAME
"""


def merge_appended(
    con: duckdb.DuckDBPyConnection, after: int, through: int, first_hour: datetime
) -> None:
    """Add the rows with positions in (after, through] to usage_hourly. `first_hour` is the
    earliest hour among them: only the rollup's rows from then on can match, and bounding the
    match by it lets DuckDB skip the rest (the rollup grows in time order), so a merge costs
    the same at any size."""
    con.execute(MERGE_APPENDED, [after, through, first_hour])


# A repricing changes only cost_usd: its difference is added to the row's hour, before the row
# itself changes (the difference needs the old cost).
_DIMS = ", ".join(f"u.{column}" for column in ROLLUP_COLUMNS.values())
_ZEROS = ", ".join(f"0 AS {name}" for name in PARTIALS if name != "cost_usd")
REPRICE_ROLLUP = f"""
MERGE INTO usage_hourly AS r
USING (
    SELECT date_trunc('hour', u.occurred_at) AS hour, {_DIMS}, {_ZEROS},
        sum(n.cost_usd - u.cost_usd) AS cost_usd
    FROM usage AS u JOIN repricing AS n ON u.position = n.call_position GROUP BY ALL
) AS b
ON {_MATCH}
WHEN MATCHED THEN UPDATE SET cost_usd = r.cost_usd + b.cost_usd
"""
REPRICE_ROWS = """
UPDATE usage SET cost_usd = n.cost_usd, price_version = n.price_version
FROM repricing AS n WHERE usage.position = n.call_position
"""


def reprice_rows(con: duckdb.DuckDBPyConnection, repriced: Mapping[int, Repriced]) -> None:
    """Give each repriced call's row its new cost, and its hour the difference."""
    with con.appender("repricing") as appender:
        appender.append_rows([(p, r.cost_usd, r.price_version) for p, r in repriced.items()])
    con.execute(REPRICE_ROLLUP)
    con.execute(REPRICE_ROWS)
    con.execute("DELETE FROM repricing")
