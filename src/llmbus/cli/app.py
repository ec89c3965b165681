"""The llmbus command line. Commands import their dependencies lazily so queries start fast."""

import os
from enum import StrEnum
from typing import Annotated, Any

import typer

from llmbus.cli.app_clients import clients
from llmbus.cli.app_completion import cancel, complete, estimate, status
from llmbus.cli.app_config import config
from llmbus.cli.app_conversations import conversations
from llmbus.cli.app_keys import keys
from llmbus.cli.app_prices import prices
from llmbus.cli.app_prompts import prompts
from llmbus.cli.app_usage import Format, usage
from llmbus.cli.options import UserOption

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
app.add_typer(conversations, name="conversations")
app.add_typer(clients, name="clients")
app.add_typer(prompts, name="prompts")
app.add_typer(config, name="config")
app.add_typer(usage, name="usage")
app.add_typer(prices, name="prices")
app.add_typer(keys, name="keys")
app.command()(complete)
app.command()(estimate)
app.command()(status)
app.command()(cancel)


@app.callback()
def credentials(
    creds: Annotated[
        str | None,
        typer.Option(
            "--creds",
            envvar="NATS_CREDS",
            help="NATS credentials: a file from `llmbus clients create` (default: the "
            "operator's, from the state folder of `llmbus up`).",
        ),
    ] = None,
) -> None:
    """An event-sourced LLM service over NATS JetStream."""
    if creds is not None:
        os.environ["NATS_CREDS"] = creds  # read by the one settings loader


class Service(StrEnum):
    completion = "completion"
    usage = "usage"
    conversation = "conversation"
    gateway = "gateway"


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="Completion worker processes.", min=1)] = 1,
) -> None:
    """Run the whole stack: nats-server (unless NATS_URL is set) and every service.

    The NATS address goes to <state_dir>/nats.url, deleted on exit. Ctrl-C drains in-flight work
    and stops everything; if one service exits, the rest are stopped and the command fails.
    """
    from llmbus.cli.commands import run_up

    run_up(workers)


@app.command()
def serve(service: Annotated[Service, typer.Argument(help="Which service to run.")]) -> None:
    """Run one service alone against NATS_URL.

    It creates or updates the streams and consumers, then serves until SIGINT or SIGTERM,
    draining in-flight work.
    """
    from llmbus.cli.commands import run_serve

    run_serve(service.value)


@projections.command("rebuild")
def projections_rebuild() -> None:
    """Drop the DuckDB projection and rebuild it from the usage event store.

    Stop the usage service first: it holds the DuckDB file.
    """
    from llmbus.cli.commands import run_rebuild

    run_rebuild()


@budgets.command("status")
def budgets_status(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Spent, reserved, limit and percentage of each budget in its current window."""
    from llmbus.cli.budgets import run_status

    run_status(fmt.value)


@budgets.command("remaining")
def budgets_remaining(
    attributes: Annotated[
        list[str] | None,
        typer.Option("--for", help="KEY=VALUE over team, user, project, model, role. Repeatable."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """What is left in each budget that a request with these attributes would count against."""
    from llmbus.cli.budgets import run_remaining

    run_remaining(attributes or [], fmt.value)


@budgets.command("set")
def budgets_set(
    name: Annotated[str, typer.Argument(help="The budget's name.")],
    limit: Annotated[str, typer.Option("--limit", help="Limit in USD per window.")],
    window: Annotated[str, typer.Option(help="daily, weekly, monthly or lifetime.")] = "daily",
    mode: Annotated[str, typer.Option(help="hard (refuses) or soft (warns).")] = "hard",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="KEY=VALUE over team, user, project, model, role. Repeatable; none: every request.",
        ),
    ] = None,
    threshold: Annotated[
        list[float] | None,
        typer.Option(
            "--threshold",
            help="Fraction of the limit, in (0, 1]. Repeatable; none: 0.5, 0.8 and 1.0.",
        ),
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the window.")] = "UTC",
) -> None:
    """Create or change a budget at run time (stored as an event).

    An invalid definition stops the command before anything is sent. Setting an existing name
    changes that budget; its spend carries over.
    """
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
    """Start the embedded stack, publish a batch of requests, and print a cost table.

    The stack runs under <state_dir>/demo/ (wiped first), with the demo's two budgets, and logs
    each service to a file there. This is what `make demo` runs.
    """
    from llmbus.cli.demo import run_demo

    run_demo(requests)


@app.command()
def report(
    out: Annotated[str, typer.Option("--out", "-o", help="HTML file to write.")] = "report.html",
    since: Annotated[str | None, typer.Option(help="From this ISO date/time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Until this ISO date/time (exclusive).")] = None,
) -> None:
    """Write a usage report as one HTML file: cost per day by model, top users and teams,
    latency percentiles by model, error rate per day, and budget status.

    The charts are inline SVG, with no script and nothing to fetch: the file opens offline. The
    data comes from the usage service (llmbus.usage.query, llmbus.budget.status).
    """
    from llmbus.cli.report import run_report

    run_report(out, since, until)


@app.command()
def chat(
    user: UserOption = None,
    conversation: Annotated[
        str | None,
        typer.Option("--conversation", "-c", help="Resume this conversation; prints its history."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Title of the new conversation.")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model of the turns (default: the conversation's)."),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="A system message to start the new conversation with.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Cap on each reply's output tokens.", min=1)
    ] = None,
) -> None:
    """Chat with a model in the terminal; reads one message per line from a pipe too.

    /title NEW renames the conversation, /help lists the commands, /exit or Ctrl-D ends the chat.
    A failed turn prints "error: <error_type>: <message>" and the chat goes on, but the command
    then exits with 1.
    """
    from llmbus.cli.chat import run_chat

    run_chat(user, conversation, title, model, system, max_tokens)


def main() -> None:
    flags_without_pydantic()
    app()


def flags_without_pydantic() -> None:
    """typer (0.29) builds a pydantic TypeAdapter to coerce each flag that was not given, --help
    and --install-completion among them: a quarter of a second of imports before `--help`
    prints. A flag's value is a bool, or None when absent; neither needs coercing, so give bool
    flags typer's pass-through, and --creds too (a path kept as a string). If typer's internals
    move, this does nothing (only slower)."""
    try:
        from typer._coercion import PassThroughRuntimeParam
        from typer.core import TyperOption
    except ImportError:
        return
    adapted = TyperOption.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None and (self.is_bool_flag or self.name == "creds"):
            self._runtime_param = PassThroughRuntimeParam(
                parameter_info=self.type_descriptor.parameter_info,
                annotation=bool if self.is_bool_flag else str,
            )
        return adapted(self)

    TyperOption.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
