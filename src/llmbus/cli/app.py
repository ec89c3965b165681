"""The llmbus command line. Commands import their dependencies lazily so queries start fast."""

from enum import StrEnum
from typing import Annotated

import typer

app = typer.Typer(
    name="llmbus",
    help="An event-sourced LLM service over NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # typer's rich help costs ~0.35 s of imports; plain help keeps queries under 0.5 s
    rich_markup_mode=None,
)
projections = typer.Typer(
    help="Manage the DuckDB usage projection.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(projections, name="projections")
budgets = typer.Typer(
    help="Define budgets and watch them.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(budgets, name="budgets")


class Service(StrEnum):
    completion = "completion"
    usage = "usage"
    conversation = "conversation"


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="Completion worker processes.", min=1)] = 1,
) -> None:
    """Run the whole stack: nats-server (unless NATS_URL is set) and every service."""
    from llmbus.cli.commands import run_up

    run_up(workers)


@app.command()
def serve(service: Annotated[Service, typer.Argument(help="Which service to run.")]) -> None:
    """Run one service alone against NATS_URL."""
    from llmbus.cli.commands import run_serve

    run_serve(service.value)


@app.command()
def complete(
    text: Annotated[str, typer.Argument(help="The user message.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = "llmbus-sim/small",
    system: Annotated[str | None, typer.Option(help="An optional system message.")] = None,
    user: Annotated[str | None, typer.Option(help="user_id to account the call to.")] = None,
    team: Annotated[str | None, typer.Option(help="team_id.")] = None,
    project: Annotated[str | None, typer.Option(help="project_id.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on output tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the CompletionReceived.")] = False,
) -> None:
    """Send one completion request and print the reply and its cost."""
    from llmbus.cli.commands import run_complete

    run_complete(text, model, system, user, team, project, max_tokens, as_json)


@app.command()
def usage(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Group by: model, provider, user, team, project, conversation, status, "
            "day, week, month. Repeatable.",
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this ISO date/time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Until this ISO date/time (exclusive).")] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="FIELD=VALUE filter. Repeatable.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Query cost, tokens and requests from the usage projection."""
    from llmbus.cli.commands import run_usage

    run_usage(by or [], since, until, where or [], limit, fmt.value)


@projections.command("rebuild")
def projections_rebuild() -> None:
    """Drop the DuckDB projection and rebuild it from the usage event store."""
    from llmbus.cli.commands import run_rebuild

    run_rebuild()


@budgets.command("status")
def budgets_status(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Spent, reserved, limit and percentage of each budget in its current window."""
    from llmbus.cli.budgets import run_status

    run_status(fmt.value)


@budgets.command("set")
def budgets_set(
    name: Annotated[str, typer.Argument(help="The budget's name.")],
    limit: Annotated[str, typer.Option("--limit", help="Limit in USD per window.")],
    window: Annotated[str, typer.Option(help="daily, weekly, monthly or lifetime.")] = "daily",
    mode: Annotated[str, typer.Option(help="hard (refuses) or soft (warns).")] = "hard",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="KEY=VALUE over team, user, project, model, role."),
    ] = None,
    threshold: Annotated[
        list[float] | None, typer.Option("--threshold", help="Fraction of the limit. Repeatable.")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the window.")] = "UTC",
) -> None:
    """Create or change a budget at run time (stored as an event)."""
    from llmbus.cli.budgets import run_set

    run_set(name, limit, window, mode, scope or [], threshold, timezone)


@budgets.command("watch")
def budgets_watch(
    budget: Annotated[str | None, typer.Option(help="Only this budget.")] = None,
) -> None:
    """Print budget events as they happen, until Ctrl-C."""
    from llmbus.cli.budgets import run_watch

    run_watch(budget)


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="How many requests to publish.", min=1)] = 24,
) -> None:
    """Start the embedded stack, publish a batch of requests, and print a cost table."""
    from llmbus.cli.demo import run_demo

    run_demo(requests)


def main() -> None:
    app()
