"""The body of `llmbus chat`: a conversation in the terminal, or fed line by line from a pipe."""

import asyncio
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from llmbus.cli.commands import console, err, fail, query_client_settings, run
from llmbus.cli.conversations import default_user, print_header, print_history, print_turn
from llmbus.shared.errors import LlmbusError
from llmbus.shared.settings import Settings

if TYPE_CHECKING:
    from llmbus.client import Client
    from llmbus.shared.contracts.conversation import ChatReply

DEFAULT_MODEL = "llmbus-sim/small"
HELP = "/title NEW renames the conversation · /exit (or Ctrl-D) ends the chat"


def run_chat(
    user: str | None, conversation_id: str | None, title: str | None, model: str | None,
    system: str | None, max_tokens: int | None,
) -> None:  # fmt: skip
    if conversation_id and title:
        fail("give --conversation to resume a conversation or --title to start one, not both")
    if conversation_id and system:
        fail("--system starts a new conversation; it cannot be added to one that exists")
    settings = query_client_settings()
    chat = Chat(settings, user or default_user(), model, max_tokens)
    try:
        run(chat.converse(conversation_id, title, system))
    except KeyboardInterrupt:
        console.print()
    chat.farewell()
    if chat.failures:
        raise SystemExit(1)


class Chat:
    def __init__(
        self, settings: Settings, user: str, model: str | None, max_tokens: int | None
    ) -> None:
        self.settings = settings
        self.user = user
        self.model = model
        self.params: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
        self.interactive = sys.stdin.isatty()
        self.failures = 0
        self.conversation_id: str | None = None
        # a new chat's conversation starts with its first turn, stored in the same save: a
        # first turn that is refused leaves no empty conversation behind
        self.title: str | None = None
        self.system: str | None = None
        self.turns = 0
        self.cost_usd = 0.0

    async def converse(
        self, conversation_id: str | None, title: str | None, system: str | None
    ) -> None:
        from llmbus.client import Client

        async with Client(settings=self.settings) as client:
            if conversation_id:
                view = await client.conversations.get(self.user, conversation_id)
                print_header(view, "resuming conversation")
                print_history(view)
                self.conversation_id = view.conversation_id
            else:
                self.title = title or f"Chat of {datetime.now().astimezone():%Y-%m-%d %H:%M}"
                self.system = system
            if self.interactive:
                console.print(f"[dim]{HELP}[/]", highlight=False)
            await self.talk(client)

    def farewell(self) -> None:
        if self.conversation_id is None:
            return
        turns = f"{self.turns} turn{'' if self.turns == 1 else 's'}"
        console.print(
            f"[dim]{turns}, ${self.cost_usd:.6f} · resume with: llmbus chat "
            f"--user {escape(self.user)} --conversation {self.conversation_id}[/]",
            soft_wrap=True, highlight=False,
        )  # fmt: skip

    async def talk(self, client: "Client") -> None:
        while (line := await read_line("you> " if self.interactive else None)) is not None:
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                command, _, argument = text.partition(" ")
                if command in ("/exit", "/quit"):
                    return
                if command == "/title":
                    await self.rename(client, argument.strip())
                elif command == "/help":
                    console.print(HELP, highlight=False)
                else:
                    err.print(f"unknown command {escape(command)}; {HELP}", soft_wrap=True)
                continue
            if not self.interactive:
                console.print(f"[bold cyan]you>[/] {escape(text)}", soft_wrap=True, highlight=False)
            await self.send(client, text)

    async def send(self, client: "Client", text: str) -> None:
        first = self.conversation_id is None
        try:
            waiting: AbstractContextManager[Any] = (
                console.status("waiting for the reply…") if self.interactive else nullcontext()
            )
            with waiting:
                reply = await client.chat(
                    self.user, self.conversation_id, text, model=self.first_model(first),
                    params=self.params, title=self.title if first else None,
                    system=self.system if first else None,
                )  # fmt: skip
            if first:
                self.conversation_id = reply.conversation_id
                await self.announce(client, reply.conversation_id)
        except LlmbusError as exc:
            self.failures += 1
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            return
        self.show(reply)

    def first_model(self, first: bool) -> str | None:
        """The model of a send: like `llmbus complete`, a new chat works out of the box on the
        offline model; later turns default to the conversation's."""
        if self.model or not first or self.settings.conversation.default_model:
            return self.model
        return DEFAULT_MODEL

    async def announce(self, client: "Client", conversation_id: str) -> None:
        """The header of a conversation its first turn has just started."""
        view = await client.conversations.get(self.user, conversation_id)
        print_header(view)
        for turn in view.messages:
            if turn.role == "system":
                print_turn(turn)

    def show(self, reply: "ChatReply") -> None:
        if reply.status == "failed":
            self.failures += 1
            err.print(
                f"[bold red]error:[/] {reply.error_type}: {escape(reply.error or '')}",
                soft_wrap=True,
            )
            return
        if reply.status == "pending" or reply.message is None:
            console.print(
                f"[dim]no reply yet to request {reply.request_id}; `llmbus conversations show` "
                "will have it once it comes[/]",
                soft_wrap=True,
            )
            return
        self.turns += 1
        self.cost_usd += reply.cost_usd
        print_turn(reply.message)
        if reply.trimmed:
            console.print(
                f"[dim]  the {reply.trimmed} oldest turns were left out to fit the model's "
                "context window[/]",
                soft_wrap=True,
            )

    async def rename(self, client: "Client", title: str) -> None:
        if not title:
            err.print("/title needs the new title, e.g. /title Trip to Lisbon")
            return
        if self.conversation_id is None:
            self.title = title  # the conversation is not started yet: its first turn takes it
            console.print(f"[dim]title: {escape(title)}[/]", soft_wrap=True)
            return
        try:
            view = await client.conversations.rename(self.user, self.conversation_id, title)
        except LlmbusError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            return
        console.print(f"[dim]renamed: {escape(view.title)}[/]", soft_wrap=True)


async def read_line(prompt: str | None) -> str | None:
    """The next line of stdin, None at its end.

    Read in a daemon thread: a blocked read must not keep the process alive after Ctrl-C, and
    the NATS connection keeps answering pings while the user thinks.
    """
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str | None] = loop.create_future()

    def deliver(value: str | None) -> None:
        if not line.done():
            line.set_result(value)

    def read() -> None:
        value: str | None
        try:
            if prompt is None:
                value = sys.stdin.readline() or None
            else:
                value = console.input(f"[bold cyan]{prompt}[/]")
        except (EOFError, KeyboardInterrupt):
            value = None
        try:
            loop.call_soon_threadsafe(deliver, value)
        except RuntimeError:
            pass  # the loop is gone: the chat ended meanwhile

    threading.Thread(target=read, daemon=True).start()
    return await line
