"""The PostgreSQL baseline of bench/analytics.py: the projection's `usage` rows in a plain table
with ordinary indexes, and the dashboard queries in plain SQL.

The rows go DuckDB -> CSV (DuckDB's COPY) -> PostgreSQL (COPY FROM STDIN, streamed in blocks),
PART rows at a time, then the indexes are built and the table is vacuumed and analyzed. The table is UNLOGGED, which
saves the load its WAL and changes nothing for reads. Queries run with work_mem at 256MB (the
server's default is 4MB), close to the 512MB DuckDB may use: sorts and hashes stay in memory on
both sides.
"""

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

BLOCK = 1 << 20
PART = 2_000_000  # rows per CSV part
WORK_MEM = "256MB"
COLUMNS = """
    position BIGINT NOT NULL, usage_id TEXT NOT NULL, request_id TEXT NOT NULL,
    provider TEXT NOT NULL, model TEXT NOT NULL, user_id TEXT, team_id TEXT, project_id TEXT,
    conversation_id TEXT, workflow_id TEXT, role TEXT, prompt_key TEXT, prompt_version INTEGER,
    status TEXT NOT NULL, error_type TEXT, prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL, total_tokens BIGINT NOT NULL,
    cost_usd NUMERIC(18, 10) NOT NULL, original_cost_usd NUMERIC(18, 10) NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION,
    occurred_at TIMESTAMP NOT NULL, tags TEXT[] NOT NULL
"""
# the index on occurred_at serves time ranges; (model, occurred_at) serves a model's history
INDEXES = ("(occurred_at)", "(model, occurred_at)")


def table_name() -> str:
    return f"bench_usage_{os.getpid()}"


def queries(table: str, since: datetime) -> dict[str, tuple[str, list[Any]]]:
    """The dashboard queries, as someone would write them against the raw table."""
    return {
        "model_day": (
            f"SELECT model, to_char(occurred_at, 'YYYY-MM-DD') AS day, count(*) AS requests, "
            f"sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, "
            f"sum(cost_usd) AS cost_usd FROM {table} "
            "GROUP BY 1, 2 ORDER BY day, cost_usd DESC, model",
            [],
        ),
        "top_users_30d": (
            f"SELECT user_id, count(*) AS requests, sum(cost_usd) AS cost_usd FROM {table} "
            "WHERE occurred_at >= %s GROUP BY user_id "
            "ORDER BY cost_usd DESC NULLS LAST, user_id LIMIT 10",
            [since],
        ),
        "latency_by_model": (
            "SELECT model, q[1] AS latency_ms_p50, q[2] AS latency_ms_p95, q[3] AS latency_ms_p99 "
            "FROM (SELECT model, percentile_disc(ARRAY[0.5, 0.95, 0.99]) "
            f"WITHIN GROUP (ORDER BY latency_ms) AS q FROM {table} GROUP BY model) s "
            "ORDER BY model",
            [],
        ),
        "team_month": (
            f"SELECT team_id, to_char(date_trunc('month', occurred_at), 'YYYY-MM') AS month, "
            f"count(*) AS requests, sum(cost_usd) AS cost_usd FROM {table} "
            "GROUP BY 1, 2 ORDER BY month, cost_usd DESC, team_id",
            [],
        ),
    }


def reachable(dsn: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    return None


def export_csv(duck_path: Path, csv: Path, after: int, through: int) -> None:
    """The `usage` rows with positions in (after, through], as CSV that PostgreSQL's COPY reads."""
    con = duckdb.connect(str(duck_path), read_only=True)
    try:
        con.execute("SET memory_limit = '512MB'")
        tags = "'{' || array_to_string(tags, ',') || '}'"  # tags here never need quoting
        columns = ["position", "usage_id", "request_id", "provider", "model", "user_id",
                   "team_id", "project_id", "conversation_id", "workflow_id", "role",
                   "prompt_key", "prompt_version", "status", "error_type", "prompt_tokens",
                   "completion_tokens", "cached_tokens", "total_tokens", "cost_usd",
                   "original_cost_usd", "latency_ms", "ttft_ms", "occurred_at"]  # fmt: skip
        con.execute(
            f"COPY (SELECT {', '.join(columns)}, {tags} AS tags FROM usage "
            f"WHERE position > {after} AND position <= {through}) "
            f"TO '{csv}' (FORMAT csv, HEADER false)"
        )
    finally:
        con.close()


def load(
    dsn: str, table: str, duck_path: Path, work: Path, rows: int, on_rows: Callable[[int], None]
) -> dict[str, float]:
    """Create and fill `table` with the projection's rows, a part at a time (DuckDB writes a
    part's CSV, COPY streams it in, it is deleted: the disk holds one part), then index, vacuum
    and analyze it; seconds per step."""
    import psycopg

    took = {"export_s": 0.0, "copy_s": 0.0, "csv_bytes": 0.0}
    csv = work / f"{table}.csv"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE UNLOGGED TABLE {table} ({COLUMNS})")
        try:
            for after in range(0, rows, PART):  # positions run 1..rows (analytics_data.py)
                started = time.perf_counter()
                export_csv(duck_path, csv, after, after + PART)
                copying = time.perf_counter()
                took["export_s"] += copying - started
                took["csv_bytes"] += csv.stat().st_size
                with (
                    conn.cursor() as cur,
                    cur.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy,
                ):
                    with csv.open("rb") as f:
                        while block := f.read(BLOCK):
                            copy.write(block)
                took["copy_s"] += time.perf_counter() - copying
                on_rows(min(PART, rows - after))
        finally:
            csv.unlink(missing_ok=True)
        conn.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        for i, columns in enumerate(INDEXES):
            conn.execute(f"CREATE INDEX {table}_i{i} ON {table} {columns}")
        took["index_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(f"VACUUM (ANALYZE) {table}")
        took["vacuum_analyze_s"] = time.perf_counter() - started
        size = conn.execute("SELECT pg_total_relation_size(%s)", [table]).fetchone()
        took["bytes"] = float(size[0]) if size else 0.0
    return took


def connect(dsn: str) -> Any:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"SET work_mem = '{WORK_MEM}'")
    return conn


def run(conn: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
    return rows


def drop(dsn: str, table: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
