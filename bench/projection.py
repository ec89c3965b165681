"""Ingest rate and group-by latency of the DuckDB usage projection, on synthetic events."""

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llmbus.services.usage.projection import UsageProjection
from llmbus.shared.contracts import UsageQuery, UsageRecorded

EVENTS = 1_000_000
BATCH = 5_000
QUERY_RUNS = 10
MODELS = ("llmbus-sim/small", "llmbus-sim/large", "gpt-4o-mini", "claude-3-5-haiku")
START = datetime(2024, 1, 1, tzinfo=UTC)


def synthetic(first: int, n: int) -> list[tuple[int, UsageRecorded]]:
    return [(i, UsageRecorded.model_validate(fields(i))) for i in range(first, first + n)]


def fields(i: int) -> dict[str, object]:
    return {
        "usage_id": f"u-{i}",
        "request_id": f"r-{i}",
        "provider": "llmbus-sim",
        "model": MODELS[i % len(MODELS)],
        "user_id": f"user-{i % 500}",
        "team_id": f"team-{i % 20}",
        "project_id": f"project-{i % 50}",
        "prompt_tokens": 200 + i % 300,
        "completion_tokens": 50 + i % 90,
        "total_tokens": 250 + i % 300 + i % 90,
        "cost_usd": round(0.000_01 * (i % 97), 10),
        "latency_ms": 40.0 + i % 900,
        "status": "error" if i % 50 == 0 else "ok",
        "role": "user",
        "occurred_at": START + timedelta(seconds=7 * i),
    }


def ingest(projection: UsageProjection, n: int, size: int) -> tuple[float, float, float]:
    """Seconds building events, then wall and CPU seconds spent in apply."""
    # Built batch by batch, as the service reads them: a million live models would make
    # every garbage collection during apply scan them all.
    building = wall = cpu = 0.0
    for first in range(1, n + 1, size):
        started = time.perf_counter()
        batch = synthetic(first, min(size, n + 1 - first))
        built, cpu_before = time.perf_counter(), time.process_time()
        projection.apply(batch)
        building += built - started
        wall += time.perf_counter() - built
        cpu += time.process_time() - cpu_before
    return building, wall, cpu


def query_p50(projection: UsageProjection, query: UsageQuery) -> tuple[float, int]:
    timings = []
    for _ in range(QUERY_RUNS):
        started = time.perf_counter()
        rows = len(projection.query(query).rows)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else EVENTS
    size = int(sys.argv[2]) if len(sys.argv) > 2 else BATCH
    with tempfile.TemporaryDirectory() as folder:
        with UsageProjection(Path(folder) / "usage.duckdb") as projection:
            building, wall, cpu = ingest(projection, n, size)
            print(f"built {n:,} UsageRecorded in {building:.1f} s (not counted in the rate)")
            print(
                f"ingest: {n:,} events in batches of {size:,} in {wall:.2f} s = "
                f"{n / wall:,.0f} events/s wall, {n / cpu:,.0f} events/s per CPU second "
                "(apply only: row conversion, append, commit)"
            )
            p50, rows = query_p50(projection, UsageQuery(group_by=["model", "day"]))
            print(f"group by model, day: {rows:,} rows, p50 {p50 * 1000:.1f} ms over {QUERY_RUNS}")


if __name__ == "__main__":
    main()
