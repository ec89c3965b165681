"""`llmbus complete` and `llmbus estimate`: one request, sent or priced. Their bodies import
lazily (commands.py, estimate.py), so --help stays fast."""

from typing import Annotated

import typer

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m",
        help="Model name. Default: the configured default_role, else llmbus-sim/small.",
    ),
]  # fmt: skip
RoleOption = Annotated[
    str | None, typer.Option("--role", "-r", help="A role of the configuration, not a model.")
]


def complete(
    text: Annotated[str, typer.Argument(help="The user message.")],
    model: ModelOption = None,
    role: RoleOption = None,
    system: Annotated[str | None, typer.Option(help="An optional system message.")] = None,
    user: Annotated[str | None, typer.Option(help="user_id to account the call to.")] = None,
    team: Annotated[str | None, typer.Option(help="team_id.")] = None,
    project: Annotated[str | None, typer.Option(help="project_id.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on output tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the CompletionReceived.")] = False,
) -> None:
    """Send one completion request and print the reply and its cost.

    After the reply comes a line with the model (and the role and the models that failed before
    it), tokens, cost and latency. A CompletionFailed prints "error: <error_type>: <message>" to
    stderr and exits with 1.
    """
    from llmbus.cli.commands import Ask, run_complete

    run_complete(Ask(text, model, role, system, user, team, project, max_tokens), as_json)


def estimate(
    text: Annotated[str, typer.Argument(help="The user message.")],
    model: ModelOption = None,
    role: RoleOption = None,
    system: Annotated[str | None, typer.Option(help="An optional system message.")] = None,
    user: Annotated[str | None, typer.Option(help="user_id the budgets match on.")] = None,
    team: Annotated[str | None, typer.Option(help="team_id.")] = None,
    project: Annotated[str | None, typer.Option(help="project_id.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on output tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Estimate.")] = False,
) -> None:
    """What a request would cost at most, with no model called.

    Prints the model routing picks (and the others it would try), the prompt's tokens counted
    offline, the worst case at list price (what a budget reserves), and what is left in each
    budget the request would be admitted against.
    """
    from llmbus.cli.commands import Ask
    from llmbus.cli.estimate import run_estimate

    run_estimate(Ask(text, model, role, system, user, team, project, max_tokens), as_json)
