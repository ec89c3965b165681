"""`llmbus prices`: the usage service's price book. Bodies import lazily (cli/prices.py)."""

from typing import Annotated

import typer

prices = typer.Typer(
    help="Model prices and their history.", no_args_is_help=True, rich_markup_mode=None
)


@prices.command("list")
def prices_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="With --model: every version of its price.")
    ] = False,
) -> None:
    """Every model's current price (USD per million tokens), its version and where it came from.

    A worker sends its catalog's prices when it starts; those that changed are recorded as a new
    version (source: catalog). `llmbus prices set` records one by hand (source: manual).
    """
    from llmbus.cli.prices import run_list

    run_list(model, history)


@prices.command("set")
def prices_set(
    model: Annotated[str, typer.Argument(help="The model name, as requests and usage name it.")],
    input_usd: Annotated[str, typer.Option("--input", help="USD per million input tokens.")],
    output_usd: Annotated[str, typer.Option("--output", help="USD per million output tokens.")],
    reason: Annotated[str, typer.Option(help="Why: kept with the price's history.")],
    cached_usd: Annotated[
        str | None,
        typer.Option("--cached", help="USD per million cached input tokens (default: --input)."),
    ] = None,
) -> None:
    """Charge a model at a new price from its workers' next call on (admin credentials).

    The change is an event in the price book; calls already made keep the price they were
    recorded with (see `llmbus usage reprice` to change those).
    """
    from llmbus.cli.prices import run_set

    run_set(model, input_usd, output_usd, cached_usd, reason)
