"""The bodies of `llmbus budgets …`."""

import contextlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from llmbus.cli.commands import (
    console,
    err,
    fail,
    parse_filters,
    print_rows,
    query_client_settings,
    run,
)
from llmbus.shared.money import usd

if TYPE_CHECKING:
    from llmbus.shared.contracts.budget import BudgetStatus


def run_status(fmt: str) -> None:
    settings = query_client_settings()
    from rich import box
    from rich.table import Table

    from llmbus.client import Client

    async def go() -> list[dict[str, Any]]:
        async with Client(settings=settings) as client:
            return [row.model_dump(mode="json") for row in await client.budgets.status()]

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
            row["name"], scope, row["window"], usd(row["spent_usd"]), usd(row["reserved_usd"]),
            usd(row["limit_usd"]), f"{row['percent']:.1f}", row["mode"],
        )  # fmt: skip
    console.print(table)


def run_remaining(attributes: list[str], fmt: str) -> None:
    settings = query_client_settings()
    from rich import box
    from rich.table import Table

    from llmbus.client import Client

    ids = parse_filters(attributes, "--for")
    unknown = sorted(set(ids) - {"user", "team", "project", "model", "role"})
    if unknown:
        fail(f"--for takes user, team, project, model and role; not {', '.join(unknown)}")

    async def go() -> list[dict[str, Any]]:
        async with Client(settings=settings) as client:
            rows = await client.budgets.remaining(
                user_id=ids.get("user"), team_id=ids.get("team"), project_id=ids.get("project"),
                model=ids.get("model"), role=ids.get("role"),
            )  # fmt: skip
            return [row.model_dump(mode="json") for row in rows]

    rows = run(go())
    if fmt != "table":
        print_rows(["budget", "mode", "remaining_usd", "limit_usd"], rows, fmt)
        return
    if not rows:
        console.print("no budget matches: nothing bounds these requests")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("budget", "mode", "remaining", "limit"):
        table.add_column(column, justify="left" if column in {"budget", "mode"} else "right")
    for row in rows:
        table.add_row(row["budget"], row["mode"], usd(row["remaining_usd"]),
                      usd(row["limit_usd"]))  # fmt: skip
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

    async def go() -> "BudgetStatus":
        async with Client(settings=settings) as client:
            return await client.budgets.set(definition)

    status = run(go())
    console.print(f"budget {status.name} set: limit {usd(status.limit_usd)} {status.window}, "
                  f"{status.mode}, spent {usd(status.spent_usd)}")  # fmt: skip


def run_watch(budget: str | None) -> None:
    settings = query_client_settings()
    from llmbus.cli.watch import BudgetWatch

    watch = BudgetWatch(
        settings, budget, out=lambda line: print(line, flush=True),
        note=lambda text: err.print(text, style="dim", highlight=False),
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        run(watch.run())
