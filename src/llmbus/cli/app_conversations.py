"""`llmbus conversations …`: the typer commands; their bodies are in cli/conversations.py."""

from typing import Annotated

import typer

from llmbus.cli.options import UserOption, ViewFormat

conversations = typer.Typer(
    help="List, show, rename and delete conversations.", no_args_is_help=True,
    rich_markup_mode=None,
)  # fmt: skip


@conversations.command("list")
def conversations_list(
    user: UserOption = None,
    limit: Annotated[int, typer.Option(help="Conversations per page.", min=1, max=100)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next cursor of the page before.")] = None,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="Output format.")] = ViewFormat.table,
) -> None:
    """A user's conversations, most recent activity first."""
    from llmbus.cli.conversations import run_list

    run_list(user, limit, cursor, fmt.value)


@conversations.command("show")
def conversations_show(
    conversation_id: Annotated[str, typer.Argument(help="The conversation's id.")],
    user: UserOption = None,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="Output format.")] = ViewFormat.table,
) -> None:
    """A conversation's messages, with the tokens and cost of each reply."""
    from llmbus.cli.conversations import run_show

    run_show(user, conversation_id, fmt.value)


@conversations.command("rename")
def conversations_rename(
    conversation_id: Annotated[str, typer.Argument(help="The conversation's id.")],
    title: Annotated[str, typer.Argument(help="The new title.")],
    user: UserOption = None,
) -> None:
    """Give a conversation a new title."""
    from llmbus.cli.conversations import run_rename

    run_rename(user, conversation_id, title)


@conversations.command("delete")
def conversations_delete(
    conversation_id: Annotated[str, typer.Argument(help="The conversation's id.")],
    user: UserOption = None,
) -> None:
    """Delete a conversation (a soft delete: its events are kept)."""
    from llmbus.cli.conversations import run_delete

    run_delete(user, conversation_id)
