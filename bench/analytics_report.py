"""The summary of bench/analytics.py: every figure against its target, and ratios to PostgreSQL
measured in the same run."""

import argparse
from typing import Any

from analytics_pg import WORK_MEM
from rich.console import Console
from rich.table import Table

NAN = float("nan")
INGEST_TARGET = 50_000  # events/s
VISIBLE_TARGET_MS = 1000.0  # p99
RATIO_TARGET = 10.0  # PostgreSQL's p50 / llmbus's
DASHBOARD = {  # name: what it is, its p50 target (ms) at 10 M rows
    "model_day": ("group by model x day (cost metrics)", 100.0),
    "top_users_30d": ("top 10 users by cost, last 30 days", 300.0),
    "latency_by_model": ("latency p50/p95/p99 by model", 300.0),
    "team_month": ("cost by team x month", 300.0),
}
TARGET_100M_MS = 1000.0  # every query, at 100 M rows


def target_ms(name: str, rows: int) -> float:
    return TARGET_100M_MS if rows >= 100_000_000 else DASHBOARD[name][1]


def agree(duck: list[dict[str, Any]], pg: list[tuple[Any, ...]], keys: int) -> dict[str, Any]:
    """Same rows (by their first `keys` columns) and the same summed cost_usd (the last column
    of both), to 1e-6."""
    mine = {tuple(r.values())[:keys]: float(r["cost_usd"]) for r in duck}
    theirs = {tuple(r[:keys]): float(r[-1]) for r in pg}
    total = abs(sum(mine.values()) - sum(theirs.values()))
    worst = max((abs(mine[k] - theirs.get(k, float("inf"))) for k in mine), default=0.0)
    ok = len(duck) == len(pg) and mine.keys() == theirs.keys() and total <= 1e-6
    return {"ok": ok, "rows": (len(duck), len(pg)), "cost_sum_diff": total, "worst_row_diff": worst}


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "[green]pass[/]" if ok else "[red]FAIL[/]"


def mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MB"


def report(results: dict[str, Any], args: argparse.Namespace, console: Console) -> None:
    rows = results["projection"]["rows"]
    duck, pg = results["llmbus"], results.get("postgres") or {}
    has_pg = bool(pg) and "skipped" not in pg
    table = Table(title=f"llmbus usage analytics, {rows:,} rows (targets are for "
                  f"{'100 M' if rows >= 100_000_000 else '10 M'} rows)")  # fmt: skip
    for column in ("figure", "llmbus", "PostgreSQL", "PG / llmbus", "target", "pass"):
        table.add_column(column, justify="left" if column in ("figure", "target") else "right")
    checks: dict[str, Any] = {}
    for name, (what, _) in DASHBOARD.items():
        mine, target = duck[name], target_ms(name, rows)
        ratio = pg[name]["p50"] / mine["p50"] if has_pg else NAN
        ok = mine["p50"] <= target and (ratio >= RATIO_TARGET if has_pg else True)
        checks[name] = {"ok": ok, "ratio": ratio, "target_ms": target}
        table.add_row(
            f"{what} [{mine['path']}]",
            f"{mine['p50']:.1f} ms\n(min {mine['min']:.1f}, p90 {mine['p90']:.1f})",
            f"{pg[name]['p50']:.0f} ms\n(min {pg[name]['min']:.0f}, p90 {pg[name]['p90']:.0f})"
            if has_pg else "-",
            f"{ratio:.1f}x" if has_pg else "-",
            f"p50 <= {target:.0f} ms, >= {RATIO_TARGET:.0f}x PG",
            verdict(ok),
        )  # fmt: skip
    build = results["build"]
    ingest_ok = build["events_per_s"] >= INGEST_TARGET
    reused = f"\n(from the build of {build['built_at'][:16]})" if build.get("reused") else ""
    table.add_row("ingest, apply in batches of 5000",
                  f"{build['events_per_s']:,.0f} events/s\n{build['events_per_cpu_s']:,.0f} per CPU s{reused}",
                  "-", "-", f">= {INGEST_TARGET:,} events/s", verdict(ingest_ok))  # fmt: skip
    checks["ingest"] = {"ok": ingest_ok}
    if has_pg:
        for name, keys in (("model_day", 2), ("team_month", 2), ("top_users_30d", 1)):
            checks[f"agree_{name}"] = agree(duck[name]["answer"], pg[name]["answer"], keys)
        same = checks["agree_model_day"]
        table.add_row("model x day: same rows and cost", f"{same['rows'][0]:,} rows",
                      f"{same['rows'][1]:,} rows", f"cost diff {same['cost_sum_diff']:.1e}",
                      "equal, cost to 1e-6", verdict(same["ok"]))  # fmt: skip
    vis = results.get("visibility")
    if vis and "visible_ms" in vis:
        v = vis["visible_ms"]
        ok = vis["markers_seen"] == vis["markers"] and v[99] <= VISIBLE_TARGET_MS
        checks["visibility"] = {"ok": ok}
        table.add_row(f"publish -> visible to a query, under {vis['rate']:,.0f} events/s",
                      f"p50 {v[50]:.0f} ms\np99 {v[99]:.0f} ms\nmax {v['max']:.0f} ms",
                      "-", "-", f"p99 <= {VISIBLE_TARGET_MS:.0f} ms", verdict(ok))  # fmt: skip
    table.add_row("RSS: this process, peak while querying",
                  f"{mb(duck.get('peak_rss'))}\n({mb(duck.get('rss_before'))} before opening)",
                  "-", "-", "(no target)", "")  # fmt: skip
    if vis and vis.get("usage_service_memory"):
        m = vis["usage_service_memory"]
        table.add_row("RSS: usage service, end of the visibility run",
                      f"peak {mb(m.get('VmHWM'))}\nnow {mb(m.get('VmRSS'))}",
                      "-", "-", "(no target)", "")  # fmt: skip
    console.print(table)
    notes(results, console)
    if has_pg:
        others = [f"{n[6:]} {'agrees' if c['ok'] else 'DIFFERS'} (rows {c['rows'][0]}/{c['rows'][1]}, "
                  f"cost diff {c['cost_sum_diff']:.1e})"
                  for n, c in checks.items() if n.startswith("agree_") and n != "agree_model_day"]  # fmt: skip
        console.print(f"- llmbus vs PostgreSQL, also: {'; '.join(others)}")
    results["checks"] = checks
    for name in DASHBOARD:  # the answers were for the check; the figures stay
        duck[name].pop("answer", None)
        if has_pg:
            pg[name].pop("answer", None)


def notes(results: dict[str, Any], console: Console) -> None:
    p, b, duck = results["projection"], results["build"], results["llmbus"]
    console.print(f"- projection: {p['rows']:,} rows, rollup usage_hourly {p['hourly_rows']:,} rows "
                  f"({p['rows'] / max(p['hourly_rows'], 1):.1f} events per rollup row), "
                  f"file {p['file_bytes'] / 1e9:.2f} GB")  # fmt: skip
    console.print(f"- ingest: {b['apply_s']:.0f} s in apply ({b['apply_cpu_s']:.0f} CPU s, all threads), "
                  f"{b['building_s']:.0f} s building the events (not counted); events/s by tenth of "
                  f"the build: {', '.join(f'{r / 1000:.0f}k' for r in b['events_per_s_by_tenth'])}")  # fmt: skip
    console.print(f"- memory: 'this process' is bench/analytics.py holding the projection and running "
                  f"the queries (VmHWM, reset before opening it: {duck['hwm_reset']}); its peak while "
                  f"building was {mb(b.get('build_peak_rss'))}. The projection sets DuckDB's "
                  "memory_limit to 512MB.")  # fmt: skip
    pg = results.get("postgres") or {}
    if "skipped" in pg:
        console.print(f"- PostgreSQL skipped: {pg['skipped']}")
    elif pg:
        console.print(f"- PostgreSQL: table {pg['table']} (UNLOGGED, indexes on (occurred_at) and "
                      f"(model, occurred_at), VACUUM ANALYZE), work_mem {WORK_MEM}; "
                      f"{pg['bytes'] / 1e9:.2f} GB; CSV {pg['export_s']:.0f} s + COPY {pg['copy_s']:.0f} s + "
                      f"indexes {pg['index_s']:.0f} s; dropped at the end")  # fmt: skip
    vis = results.get("visibility")
    if vis and "visible_ms" in vis:
        console.print(f"- visibility: {vis['published']:,} events in {vis['publish_s']:.1f} s "
                      f"({vis['rate']:,.0f}/s; {vis['rate_asked']:,.0f}/s asked), {vis['markers_seen']}"
                      f"/{vis['markers']} markers seen, {vis['queries']} queries (round trip p50 "
                      f"{vis['query_round_trip_ms'][50]:.0f} ms, p99 {vis['query_round_trip_ms'][99]:.0f} ms, "
                      f"{vis['query_error_count']} errors), all projected {vis['drain_s']:.1f} s after the "
                      f"last publish; CPU s: {', '.join(f'{k} {v:.1f}' for k, v in vis['cpu_s'].items())}. "
                      "'usage service' is `llmbus serve usage` (pid "
                      f"{vis['usage_service_pid']}), its projection holding only this run's events")  # fmt: skip
    if vis and "error" in vis:
        console.print(f"- visibility run failed: {vis['error']}")
    if vis and "visible_ms" in vis:
        for key in ("query_errors", "log_errors", "stopped"):
            if vis.get(key):
                console.print(f"  {key}: {vis[key]}")
