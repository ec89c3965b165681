"""`llmbus usage`: a usage query (the group's own command), and its subcommands. Bodies import
lazily (commands.py and the subcommands' modules), so --help stays fast."""

from enum import StrEnum
from typing import Annotated

import typer

# the contract's own lists, from a module that does not import pydantic (kept off --help)
from llmbus.shared.usage_groups import DEFAULT_METRICS, FILTER_FIELDS, GROUP_FIELDS, METRICS

usage = typer.Typer(
    help="Query usage, or export it.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


SinceOption = Annotated[
    str | None,
    typer.Option(help="From this ISO date/time (inclusive), in --tz unless it says its own."),
]
UntilOption = Annotated[
    str | None, typer.Option(help="Until this ISO date/time (exclusive), in --tz likewise.")
]
WhereOption = Annotated[
    list[str] | None,
    typer.Option("--where", help=f"FIELD=VALUE over {', '.join(FILTER_FIELDS)}. Repeatable."),
]
TimezoneOption = Annotated[
    str, typer.Option("--tz", help="IANA timezone of --since/--until and of hour/day/week/month.")
]


@usage.callback()
def query(
    ctx: typer.Context,
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help=f"Group by: {', '.join(GROUP_FIELDS)}. Repeatable."),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help=f"Measure: {', '.join(METRICS)}. Repeatable (default: "
            f"{', '.join(DEFAULT_METRICS)}).",
        ),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    where: WhereOption = None,
    tz: TimezoneOption = "UTC",
    order_by: Annotated[
        str | None, typer.Option("--order-by", help="Sort by this metric, largest first.")
    ] = None,
    ascending: Annotated[
        bool, typer.Option("--asc", help="With --order-by: smallest first.")
    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", "--top", help="At most N rows.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Query usage: requests, tokens, cost, latency and errors from the usage projection.

    The usage service answers over llmbus.usage.query: this command never opens DuckDB. Without
    --by the answer is one row of totals; rows come in time order, then most expensive first,
    unless --order-by says otherwise. Percentiles (latency_ms_p95, …) read every matching row;
    the default metrics are sums, answered from hourly rollups.
    """
    if ctx.invoked_subcommand is not None:
        return
    from llmbus.cli.commands import UsageAsk, run_usage

    ask = UsageAsk(
        by or [], metric or [], since, until, where or [], tz, order_by, ascending, limit
    )
    run_usage(ask, fmt.value)
