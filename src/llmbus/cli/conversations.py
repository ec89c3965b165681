"""The bodies of `llmbus conversations …`, and the one way the conversation and prompt commands
call the stack."""

import getpass
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rich import box
from rich.markup import escape
from rich.table import Table

from llmbus.cli.commands import console, err, fail, query_client_settings, run

if TYPE_CHECKING:
    from llmbus.client import Client
    from llmbus.shared.contracts.conversation import ConversationView, TurnView

T = TypeVar("T")


def ask(call: "Callable[[Client], Awaitable[T]]") -> T:
    """One SDK exchange with the stack; any error ends the command with one line and exit 1."""
    settings = query_client_settings()
    from pydantic import ValidationError

    from llmbus.client import Client

    async def go() -> T:
        async with Client(settings=settings) as client:
            return await call(client)

    try:
        result: T = run(go())
    except ValidationError as exc:
        fail(invalid("invalid request", exc))
    return result


def invalid(what: str, exc: Any) -> str:
    """A pydantic ValidationError as one line."""
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors()
    )
    return f"{what}: {problems}"


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "anonymous"


def local_time(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M") if at else "—"


def run_list(user: str | None, limit: int, cursor: str | None, fmt: str) -> None:
    user = user or default_user()
    page = ask(lambda client: client.conversations.list(user, cursor=cursor, limit=limit))
    if fmt == "json":
        print(page.model_dump_json(indent=2))
        return
    # the title over the id: an 80-column terminal has no room for both side by side
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("title / conversation", min_width=36)
    table.add_column("msgs", justify="right")
    table.add_column("cost", justify="right")
    table.add_column("last activity", no_wrap=True)
    for item in page.items:
        table.add_row(
            f"[bold]{escape(item.title)}[/]\n{item.conversation_id}", str(item.message_count),
            f"${item.total_cost_usd:.6f}", local_time(item.last_activity_at),
        )  # fmt: skip
    if page.items:
        console.print(table)
    else:
        console.print(f"no conversations for user {escape(user)}")
    if page.next_cursor:
        console.print(
            f"next cursor: {page.next_cursor}  (llmbus conversations list --user {escape(user)}"
            f" --cursor {page.next_cursor})",
            soft_wrap=True,
        )


def run_show(user: str | None, conversation_id: str, fmt: str) -> None:
    user = user or default_user()
    view = ask(lambda client: client.conversations.get(user, conversation_id))
    if fmt == "json":
        print(view.model_dump_json(indent=2))
        return
    print_header(view)
    print_history(view)
    console.print(
        f"[dim]{view.message_count} messages · {view.total_tokens} tokens · "
        f"${view.total_cost_usd:.6f}[/]"
    )


def run_rename(user: str | None, conversation_id: str, title: str) -> None:
    user = user or default_user()
    view = ask(lambda client: client.conversations.rename(user, conversation_id, title))
    console.print(f"renamed {view.conversation_id}: {escape(view.title)}", soft_wrap=True)


def run_delete(user: str | None, conversation_id: str) -> None:
    user = user or default_user()
    summary = ask(lambda client: client.conversations.delete(user, conversation_id))
    console.print(
        f"deleted {summary.conversation_id} ({escape(summary.title)}); its events are kept",
        soft_wrap=True,
    )


def print_header(view: "ConversationView", verb: str = "conversation") -> None:
    model = f" · model {escape(view.model)}" if view.model else ""
    console.print(
        f"[bold]{verb} {view.conversation_id}[/] · {escape(view.title)} · user "
        f"{escape(view.user_id)}{model} · started {local_time(view.created_at)}",
        soft_wrap=True,
        highlight=False,
    )


def print_history(view: "ConversationView") -> None:
    for turn in view.messages:
        print_turn(turn)
    failed = {f.request_id: f for f in view.failures}
    for failure in failed.values():
        err.print(
            f"[red]failed[/] request {failure.request_id}: {failure.error_type}: "
            f"{escape(failure.message)}",
            soft_wrap=True,
        )
    for trim in view.trims:
        console.print(
            f"[dim]request {trim.request_id} left out the {trim.dropped} oldest turns "
            f"(kept {trim.kept}, context window {trim.context_window} tokens)[/]",
            soft_wrap=True,
        )
    for request_id in view.pending:
        console.print(f"[dim]waiting for the reply to request {request_id}[/]", soft_wrap=True)


ROLE_STYLE = {"user": "bold cyan", "assistant": "bold green", "system": "bold magenta"}


def print_turn(turn: "TurnView", speaker: str | None = None) -> None:
    name = speaker or turn.role
    if turn.content is None:
        text = "[dim](content not stored: metadata-only privacy mode)[/]"
    else:
        text = escape(turn.content)
    console.print(f"[{ROLE_STYLE[turn.role]}]{name}>[/] {text}", soft_wrap=True, highlight=False)
    if turn.role == "assistant":
        console.print(f"[dim]  {turn_cost(turn)}[/]", soft_wrap=True, highlight=False)


def turn_cost(turn: "TurnView") -> str:
    model = f"{escape(turn.model)} · " if turn.model else ""
    return f"{model}{turn.prompt_tokens} in / {turn.completion_tokens} out · ${turn.cost_usd:.6f}"
