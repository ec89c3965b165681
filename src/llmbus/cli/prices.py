"""The bodies of `llmbus prices list` and `llmbus prices set`."""

from typing import Any

from rich import box
from rich.table import Table

from llmbus.cli.commands import console, fail, query_client_settings, run


def run_list(model: str | None, history: bool) -> None:
    if history and model is None:
        fail("--history needs --model")
    settings = query_client_settings()
    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await client.prices.list(model, history)

    console.print(prices_table(run(go())))


def run_set(
    model: str, input_usd: str, output_usd: str, cached_usd: str | None, reason: str
) -> None:
    settings = query_client_settings()
    from pydantic import ValidationError

    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await client.prices.set(
                model, input_usd, output_usd, cached_per_million=cached_usd, reason=reason
            )

    try:
        entry = run(go())
    except ValidationError as exc:
        fail("invalid price: " + "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors()))
    console.print(prices_table([entry]))


def prices_table(entries: list[Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("model", "version", "in $/1M", "out $/1M", "cached $/1M", "source", "since",
                   "by", "reason"):  # fmt: skip
        table.add_column(column, justify="right" if "$" in column else "left")
    for e in entries:
        price = e.price
        table.add_row(
            e.model, e.version, str(price.input_per_million), str(price.output_per_million),
            str(price.cached_per_million), e.source, e.effective_at.strftime("%Y-%m-%d %H:%M"),
            e.by or "—", e.reason or "—",
        )  # fmt: skip
    return table
