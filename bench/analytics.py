"""Usage analytics at scale: the DuckDB projection against PostgreSQL, ingest, visibility, memory.

    cd /work/main && .venv/bin/python bench/analytics.py [--rows 10000000] [--db PATH --keep]

1. Builds a projection of --rows synthetic UsageRecorded events (bench/analytics_data.py), in
   batches of 5000 through `UsageProjection.apply`, as the usage service does, and times apply
   alone (building the events is not counted). --db PATH --keep keeps the file, and a later run
   with the same --db, --rows and --seed reuses it (with the ingest figures of its build).
2. Times the dashboard queries on it with `UsageProjection.query` (p50, min and p90 over --runs,
   after one warm-up), and says which each took: the hourly rollup or the raw rows.
3. Loads the same rows into PostgreSQL (bench/analytics_pg.py) and times the same queries in
   plain SQL there, in the same run; checks that both answer the model x day group-by alike.
4. Starts the usage service and measures how soon a published event is visible to queries under
   a steady load (bench/analytics_live.py), and the service's memory.

A benchmark, not a test: it exits 0 whatever the figures.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# isort: off
import analytics_pg as PG
from analytics_data import BATCH, Synthetic
from analytics_live import memory, visibility
from analytics_report import report
from pipeline import percentile
# isort: on

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from llmbus.services.usage.projection import UsageProjection
from llmbus.services.usage.projection.query import plan
from llmbus.shared.contracts import UsageQuery

console = Console()
DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def dashboard(since: datetime) -> dict[str, UsageQuery]:
    return {
        "model_day": UsageQuery(
            group_by=["model", "day"],
            metrics=["requests", "prompt_tokens", "completion_tokens", "cost_usd"],
        ),
        "top_users_30d": UsageQuery(
            group_by=["user"],
            metrics=["requests", "cost_usd"],
            since=since,
            order_by="cost_usd",
            limit=10,
        ),
        "latency_by_model": UsageQuery(
            group_by=["model"], metrics=["latency_ms_p50", "latency_ms_p95", "latency_ms_p99"]
        ),
        "team_month": UsageQuery(group_by=["team", "month"], metrics=["requests", "cost_usd"]),
    }


def hwm_reset() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console)  # fmt: skip


# ---------------------------------------------------------------- 1. the projection


def build(
    path: Path, rows: int, seed: int, end: datetime, total: int | None = None
) -> dict[str, Any]:
    """Apply `rows` synthetic events in batches of BATCH; wall and CPU time of apply alone. With
    `total`, the first `rows` of a set of `total` (as dense in time as those)."""
    synth = Synthetic(seed, total or rows, end)
    batches = -(-rows // BATCH)
    wall = cpu = building = 0.0
    tenths: list[float] = []  # events/s (wall) over each tenth of the build: does it hold up?
    tenth_wall, tenth_rows = 0.0, 0
    checked = False
    with UsageProjection(path) as projection, progress() as bar:
        projection.reset()
        task = bar.add_task(f"building {rows:,} rows", total=rows, note="")
        for index in range(batches):
            started = time.perf_counter()
            batch = synth.batch(index)
            built, cpu_before = time.perf_counter(), time.process_time()
            projection.apply(batch)
            took = time.perf_counter() - built
            building += built - started
            wall += took
            cpu += time.process_time() - cpu_before
            tenth_wall += took
            tenth_rows += len(batch)
            if (index + 1) * 10 // batches > len(tenths) or index == batches - 1:
                tenths.append(tenth_rows / tenth_wall)
                tenth_wall, tenth_rows = 0.0, 0
            done = index * BATCH + len(batch)
            bar.update(task, completed=done, note=f"apply {done / wall:,.0f}/s")
            if not checked and done >= rows / 50 and done >= 100_000:
                checked = True
                disk_check(path, done, rows)
    return {"rows": rows, "seed": seed, "end": end.isoformat(), "built_at": datetime.now(UTC).isoformat(),
            "apply_s": wall, "apply_cpu_s": cpu, "building_s": building,
            "events_per_s": rows / wall, "events_per_cpu_s": rows / cpu,
            "events_per_s_by_tenth": [round(r) for r in tenths],
            "build_peak_rss": memory(os.getpid()).get("VmHWM")}  # fmt: skip


def disk_check(path: Path, done: int, rows: int) -> None:
    need = path.stat().st_size / done * (rows - done)
    free = shutil.disk_usage(path.parent).free
    console.print(f"  after {done:,} rows: the file is {path.stat().st_size / 1e9:.2f} GB; "
                  f"{rows:,} rows need about {need / 1e9:.1f} GB more, {free / 1e9:.0f} GB free")  # fmt: skip
    if need > free * 0.9:
        raise SystemExit("not enough disk for --rows: see --estimate")


def describe(path: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        rows, first, last = con.execute(
            "SELECT count(*), min(occurred_at), max(occurred_at) FROM usage").fetchall()[0]  # fmt: skip
        hourly, lo, hi = con.execute(
            "SELECT count(*), min(hour), max(hour) FROM usage_hourly").fetchall()[0]  # fmt: skip
    finally:
        con.close()
    return {"rows": rows, "hourly_rows": hourly, "span": (lo, hi), "first": first, "last": last,
            "file_bytes": path.stat().st_size}  # fmt: skip


def timed(fn: Any, runs: int) -> tuple[dict[str, float], Any]:
    answer = fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": statistics.median(times), "min": min(times), "p90": percentile(times, 90),
            "runs": runs}, answer  # fmt: skip


def llmbus_queries(path: Path, queries: dict[str, UsageQuery], span: Any, runs: int) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"hwm_reset": hwm_reset(), "rss_before": memory(os.getpid()).get("VmRSS")}
    with UsageProjection(path) as projection:
        for name, q in queries.items():
            figures, answer = timed(lambda q=q: projection.query(q), runs)
            out[name] = figures | {"path": "rollup" if plan(q, span).rollup else "raw",
                                   "result_rows": len(answer.rows), "answer": answer.rows}  # fmt: skip
            console.print(f"  llmbus {name:17} {figures['p50']:9.1f} ms p50  "
                          f"({out[name]['path']}, {len(answer.rows)} rows)")  # fmt: skip
        out["peak_rss"] = memory(os.getpid()).get("VmHWM")
    return out


# ---------------------------------------------------------------- 3. PostgreSQL


def postgres(
    args: argparse.Namespace, path: Path, rows: int, since: datetime, work: Path
) -> dict[str, Any]:
    why = PG.reachable(args.dsn)
    if why is not None:
        console.print(f"[yellow]PostgreSQL skipped: {args.dsn} unreachable ({why})[/]")
        return {"skipped": why}
    table = PG.table_name()
    out: dict[str, Any] = {"table": table}
    try:
        with progress() as bar:
            task = bar.add_task(f"loading PostgreSQL {table}", total=rows, note="rows")
            out |= PG.load(args.dsn, table, path, work, rows, lambda n: bar.advance(task, n))
        console.print(f"  PostgreSQL: CSV {out['csv_bytes'] / 1e9:.2f} GB written in "
                      f"{out['export_s']:.1f} s, COPY {out['copy_s']:.1f} s, indexes "
                      f"{out['index_s']:.1f} s, VACUUM ANALYZE {out['vacuum_analyze_s']:.1f} s, "
                      f"table {out['bytes'] / 1e9:.2f} GB")  # fmt: skip
        conn = PG.connect(args.dsn)
        try:
            for name, (sql, params) in PG.queries(table, since).items():
                figures, answer = timed(lambda s=sql, p=params: PG.run(conn, s, p), args.pg_runs)
                out[name] = figures | {"result_rows": len(answer), "answer": answer}
                console.print(f"  postgres {name:15} {figures['p50']:9.1f} ms p50  ({len(answer)} rows)")  # fmt: skip
        finally:
            conn.close()
    finally:
        PG.drop(args.dsn, table)
    return out


# ---------------------------------------------------------------- the run


def main() -> None:
    args = parse()
    if args.estimate:
        return estimate(args)
    with tempfile.TemporaryDirectory(prefix="llmbus-analytics-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        path = Path(args.db) if args.db else work / "usage.duckdb"
        meta_path = path.with_name(path.name + ".bench.json")
        results: dict[str, Any] = {"rows_asked": args.rows, "db": str(path)}
        try:
            results["build"] = reuse(path, meta_path, args) or fresh(path, meta_path, args)
            info = describe(path)
            last_hour = info["span"][1]
            since = last_hour + timedelta(hours=1) - timedelta(days=30)
            results["projection"] = {k: str(v) if k in ("span", "first", "last") else v
                                     for k, v in info.items()}  # fmt: skip
            console.print(f"projection: {info['rows']:,} rows, usage_hourly {info['hourly_rows']:,} "
                          f"rows, {info['file_bytes'] / 1e9:.2f} GB, {info['first']} .. {info['last']}")  # fmt: skip
            queries = dashboard(since)
            results["llmbus"] = llmbus_queries(path, queries, info["span"], args.runs)
            if not args.no_postgres:
                results["postgres"] = postgres(args, path, info["rows"], since, work)
        finally:
            if args.db and not args.keep:
                for leftover in (path, meta_path, path.with_name(path.name + ".wal")):
                    leftover.unlink(missing_ok=True)
        if not args.no_visibility:
            console.print(f"visibility: {args.rate:,.0f} events/s for {args.seconds:.0f} s, "
                          f"{args.markers:g} markers/s, asking every {args.poll_ms:g} ms ...")  # fmt: skip
            try:
                results["visibility"] = asyncio.run(
                    visibility(args.rate, args.seconds, args.markers, args.poll_ms)
                )
            except Exception as exc:  # the figures above still count: report them
                console.print_exception()
                results["visibility"] = {"error": repr(exc)[:500]}
    report(results, args, console)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        console.print(f"figures written to {args.json}")


def reuse(path: Path, meta_path: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    if not (path.exists() and meta_path.exists()):
        return None
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if (meta.get("rows"), meta.get("seed")) != (args.rows, args.seed):
        console.print(f"{path} holds another build ({meta.get('rows')} rows): rebuilding")
        return None
    try:
        if describe(path)["rows"] != args.rows:
            return None
    except Exception:  # another schema version, an unfinished build: rebuild it
        return None
    console.print(f"reusing {path}: {args.rows:,} rows built {meta.get('built_at')}")
    return meta | {"reused": True}


def fresh(path: Path, meta_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    meta_path.unlink(missing_ok=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    meta = build(path, args.rows, args.seed, end)
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta | {"reused": False}


def estimate(args: argparse.Namespace) -> None:
    """Build a sample, and say what --rows would take: time and disk."""
    sample = min(args.rows, 200_000)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="llmbus-analytics-", dir=args.work_dir) as tmp:
        path, csv = Path(tmp) / "usage.duckdb", Path(tmp) / "usage.csv"
        meta = build(path, sample, args.seed, end, total=args.rows)
        duck_row = path.stat().st_size / sample
        PG.export_csv(path, csv, 0, sample)
        csv_row = csv.stat().st_size / sample
    rows = args.rows
    build_s = (meta["apply_s"] + meta["building_s"]) * rows / sample
    free = shutil.disk_usage(Path(args.db).parent if args.db else tempfile.gettempdir()).free
    console.print(f"--rows {rows:,}, extrapolated from its first {sample:,} (roughly linear; the "
                  "apply rate may fall as the tables grow):")  # fmt: skip
    console.print(f"  build: about {build_s / 60:.0f} min ({meta['events_per_s']:,.0f} events/s "
                  f"apply, {meta['building_s'] / sample * 1e6:.0f} us to build an event)")  # fmt: skip
    console.print(f"  disk: the DuckDB file about {duck_row * rows / 1e9:.1f} GB; for PostgreSQL "
                  f"CSV parts of {csv_row * PG.PART / 1e9:.1f} GB one at a time, and a table "
                  f"with its indexes of about {1.6 * csv_row * rows / 1e9:.1f} GB; "
                  f"{free / 1e9:.0f} GB free")  # fmt: skip
    console.print(f"  PostgreSQL: the CSV is written and loaded {PG.PART:,} rows at a time; each "
                  "query reads every row (or a month of them), --pg-runs + 1 times")  # fmt: skip


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--db", help="the DuckDB file: reused when it holds --rows of --seed")
    p.add_argument("--keep", action="store_true", help="keep --db at the end")
    p.add_argument("--work-dir", help="where the temp files go (the CSV for PostgreSQL)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per query, after a warm-up")
    p.add_argument("--pg-runs", type=int, help="timed runs per PostgreSQL query (--runs)")
    p.add_argument("--dsn", default=DSN, help="PostgreSQL")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--no-visibility", action="store_true")
    p.add_argument("--rate", type=float, default=3000.0, help="visibility: events/s published")
    p.add_argument("--seconds", type=float, default=20.0, help="visibility: how long")
    p.add_argument("--markers", type=float, default=10.0, help="visibility: markers/s")
    p.add_argument("--poll-ms", type=float, default=50.0, help="visibility: pause between queries")
    p.add_argument(
        "--estimate", action="store_true", help="say what --rows would take; run nothing"
    )
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args()
    args.pg_runs = args.pg_runs or args.runs
    return args


if __name__ == "__main__":
    main()
