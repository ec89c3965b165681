"""`llmbus complete`, `estimate`, `status` and `cancel`: one request, sent, priced, looked up
or stopped. Their bodies import lazily (commands.py, estimate.py, requests.py), so --help stays
fast."""

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
    stream: Annotated[
        bool, typer.Option("--stream", "-s", help="Print the reply as it is generated.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the CompletionReceived.")] = False,
) -> None:
    """Send one completion request and print the reply and its cost.

    After the reply comes a line with the model (and the role and the models that failed before
    it), tokens, cost and latency. A CompletionFailed prints "error: <error_type>: <message>" to
    stderr and exits with 1. With --stream the text is printed as it arrives (--json: each
    chunk as a JSON line), and Ctrl-C cancels the request: what was generated is charged.
    """
    from llmbus.cli.commands import Ask, run_complete

    ask = Ask(text, model, role, system, user, team, project, max_tokens)
    if stream:
        from llmbus.cli.requests import run_stream

        run_stream(ask, as_json)
    else:
        run_complete(ask, as_json)


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


RequestIdArgument = Annotated[str, typer.Argument(help="The request_id.")]


def status(
    request_id: RequestIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the CompletionStatus.")] = False,
) -> None:
    """Where a request is: queued, running (on which model, since when), received or failed
    (with how it ended), or unknown."""
    from llmbus.cli.requests import run_status

    run_status(request_id, as_json)


def cancel(
    request_id: RequestIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the CancelReply.")] = False,
) -> None:
    """Stop a request. A running call is stopped and what it generated is charged; a queued one
    ends cancelled, with no model call, when a worker takes it; a finished one says how it
    ended. Exits with 1 when no such request is known."""
    from llmbus.cli.requests import run_cancel

    run_cancel(request_id, as_json)
