"""The bodies of `llmbus budgets …`."""

import contextlib
import json
from typing import Any

from pydantic import ValidationError

from llmbus.cli.commands import (
    console,
    fail,
    parse_filters,
    print_rows,
    query_client_settings,
    run,
)


def run_status(fmt: str) -> None:
    settings = query_client_settings()
    from rich import box
    from rich.table import Table

    from llmbus.client import Client

    async def go() -> list[dict[str, Any]]:
        async with Client(settings=settings) as client:
            return await client.budget_status()

    rows = run(go())
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    if fmt == "csv":
        flat = [row | {"scope": ",".join(f"{k}={v}" for k, v in row["scope"].items())}
                for row in rows]  # fmt: skip
        print_rows(list(rows[0]) if rows else ["name"], flat, "csv")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("budget", "scope", "window", "spent", "reserved", "limit", "%", "mode"):
        table.add_column(column, justify="left" if column in {"budget", "scope", "window",
                                                                "mode"} else "right")  # fmt: skip
    for row in rows:
        scope = ",".join(f"{k}={v}" for k, v in row["scope"].items()) or "global"
        table.add_row(
            row["name"], scope, row["window"], f"${row['spent_usd']:.6f}",
            f"${row['reserved_usd']:.6f}", f"${row['limit_usd']:.2f}", f"{row['percent']:.1f}",
            row["mode"],
        )  # fmt: skip
    console.print(table)


def run_set(
    name: str, limit: str, window: str, mode: str, scope: list[str],
    thresholds: list[float] | None, timezone: str,
) -> None:  # fmt: skip
    settings = query_client_settings()
    from llmbus.client import Client
    from llmbus.shared.contracts.budget import BudgetDefinition

    try:
        definition = BudgetDefinition.model_validate({
            "name": name, "limit_usd": limit, "window": window, "mode": mode,
            "scope": parse_filters(scope, "--scope"), "timezone": timezone,
        } | ({"thresholds": thresholds} if thresholds else {}))  # fmt: skip
    except ValidationError as exc:
        fail("invalid budget: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))  # fmt: skip

    async def go() -> dict[str, Any]:
        async with Client(settings=settings) as client:
            return await client.set_budget(definition)

    status = run(go())
    console.print(f"budget {status['name']} set: limit ${status['limit_usd']:.2f} "
                  f"{status['window']}, {status['mode']}, spent ${status['spent_usd']:.6f}")  # fmt: skip


def run_watch(budget: str | None) -> None:
    settings = query_client_settings()
    from llmbus.client import Client

    async def go() -> None:
        async with Client(settings=settings) as client:
            console.print("watching budget events (Ctrl-C stops)…", style="dim")
            async for event in client.budget_events(budget=budget):
                print(event.model_dump_json(), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        run(go())
