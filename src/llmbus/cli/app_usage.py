"""`llmbus usage`: a usage query (the group's own command), and its subcommands. Bodies import
lazily (commands.py and the subcommands' modules), so --help stays fast."""

from enum import StrEnum
from pathlib import Path
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


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"
    parquet = "parquet"


@usage.command("export")
def export(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="The file to write (with --partition, a directory)."),
    ],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="csv, json (one object per line) or parquet."),
    ],
    since: SinceOption = None,
    until: UntilOption = None,
    where: WhereOption = None,
    tz: Annotated[
        str,
        typer.Option("--tz", help="IANA timezone of --since/--until and of the day partitions."),
    ] = "UTC",
    partition: Annotated[
        bool,
        typer.Option("--partition", help="Parquet only: one directory per day, day=YYYY-MM-DD."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Export every usage row (one per provider call) to a CSV, JSON or Parquet file.

    The rows come from the usage service over llmbus.usage.rows, a page at a time, into a
    temporary DuckDB file beside --out, then DuckDB writes --out: memory stays flat at any
    number of rows. JSON is newline-delimited, one object per row. --partition writes Hive-style
    directories (--out/day=2026-11-01/…) that DuckDB, Spark, Athena and ClickHouse read as one
    table. Times are UTC; a client without admin credentials exports its own rows only.
    """
    from llmbus.cli.export import ExportAsk, run_export

    run_export(ExportAsk(out, fmt.value, since, until, where or [], tz, partition, force))


@usage.command("reprice")
def reprice(
    model: Annotated[
        str | None, typer.Option(help="What if every call had been priced at this model's price.")
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices",
            help="A YAML or JSON file: MODEL: {input_per_million, output_per_million, "
            "cached_per_million}. What the calls of those models cost at these prices.",
        ),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    where: WhereOption = None,
    tz: TimezoneOption = "UTC",
    apply: Annotated[
        bool, typer.Option("--apply", help="Record the new costs (--prices only; admin).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (needed with --apply).")] = None,
) -> None:
    """What usage would have cost at other prices, by model and day; nothing changes without
    --apply.

    With --apply each call whose cost changes gets a UsageRepriced event (who, why, the old and
    the new cost): queries then show the new cost as cost_usd and the recorded one as
    original_cost_usd, and a rebuild gives the same.
    """
    from llmbus.cli.reprice import RepriceAsk, run_reprice

    run_reprice(RepriceAsk(model, prices, since, until, where or [], tz, apply, reason))
