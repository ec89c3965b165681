"""The body of `llmbus usage reprice`."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from llmbus.cli.commands import (
    console,
    err,
    fail,
    parse_filters,
    parse_time,
    problem,
    query_client_settings,
    run,
)


@dataclass(frozen=True)
class RepriceAsk:
    model: str | None
    prices: Path | None
    since: str | None
    until: str | None
    where: list[str]
    timezone: str
    apply: bool
    reason: str | None

    def request(self) -> dict[str, Any]:
        if (self.model is None) == (self.prices is None):
            fail("name a --model to price every call at, or a --prices file, not both")
        return {
            "model": self.model, "prices": read_prices(self.prices) if self.prices else None,
            "since": parse_time(self.since, "--since"), "until": parse_time(self.until, "--until"),
            "filters": parse_filters(self.where), "timezone": self.timezone,
            "apply": self.apply, "reason": self.reason,
        }  # fmt: skip


def read_prices(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read --prices {path}: {exc.strerror}")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"--prices {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}")
    if not isinstance(data, dict) or not data:
        fail(f"--prices {path} must map each model to its prices, e.g. "
             "gpt-4o-mini: {input_per_million: 0.15, output_per_million: 0.6}")  # fmt: skip
    return data


def run_reprice(ask: RepriceAsk) -> None:
    settings = query_client_settings()
    request = ask.request()
    from pydantic import ValidationError

    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            with console.status("repricing…"):
                return await client.usage.reprice(**request)

    try:
        result = run(go())
    except ValidationError as exc:
        fail("invalid repricing: " + "; ".join(problem(e) for e in exc.errors()))
    console.print(result_table(result))
    versions = ", ".join(f"{m} at {v}" for m, v in result.versions.items())
    if result.applied:
        console.print(f"applied: {result.changed} calls repriced ({versions}); "
                      f"repricing {result.repricing_id}")  # fmt: skip
    else:
        err.print(f"dry run: {result.changed} calls would change ({versions}); "
                  "nothing was recorded" + ("" if ask.model else ", --apply records it"))  # fmt: skip


def result_table(result: Any) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_footer=True)
    columns = ("day", "model", "calls", "cost_usd", "new_cost_usd", "difference_usd")
    footers = ("total", "", str(result.calls), _usd(result.cost_usd),
               _usd(result.new_cost_usd), _usd(result.difference_usd, signed=True))  # fmt: skip
    for column, footer in zip(columns, footers, strict=True):
        table.add_column(
            column, footer=footer, justify="left" if column in ("day", "model") else "right"
        )
    for row in result.rows:
        table.add_row(row.day, row.model, str(row.calls), _usd(row.cost_usd),
                      _usd(row.new_cost_usd), _usd(row.difference_usd, signed=True))  # fmt: skip
    return table


def _usd(value: Any, signed: bool = False) -> str:
    return f"{'+' if signed and value > 0 else ''}{float(value):,.6f}"
