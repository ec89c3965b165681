"""The conversation and prompt commands, run as a user runs them, against a real stack."""

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from llmbus.client import Client
from llmbus.shared.errors import LlmbusError
from llmbus.shared.settings import Settings
from support import pipeline, projected_requests, running, wait_for

MODEL = "llmbus-sim/small"


async def llmbus(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "llmbus", *args], input=stdin,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def ok(*args: str, stdin: str = "") -> str:
    done = await llmbus(*args, stdin=stdin)
    assert done.returncode == 0, f"llmbus {' '.join(args)}: {done.stderr}"
    return done.stdout


async def refused(*args: str) -> str:
    done = await llmbus(*args)
    assert done.returncode == 1, f"llmbus {' '.join(args)} should fail: {done.stdout}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Client]:
    """The completion, usage and conversation services in this event loop."""
    from llmbus.services.conversation.service import serve as serve_conversation

    async with pipeline(settings) as (_, _, client), running(serve_conversation, settings):

        async def answering() -> bool:
            try:
                await client.prompts.list()
            except LlmbusError:
                return False
            return True

        await wait_for(answering, 60, "the conversation service")
        yield client


async def test_a_piped_chat_answers_each_line_and_the_conversation_keeps_every_turn(
    settings: Settings,
) -> None:
    async with stack(settings):
        out = await ok(
            "chat", "--user", "ann", "--title", "Piped chat", "--model", MODEL,
            stdin="My cat is called Miso.\n/title About Miso\nWhat is my cat called?\n",
        )  # fmt: skip
        assert out.count("assistant>") == 2
        assert "You asked: “What is my cat called?”" in out
        conversation_id = re.search(r"conversation ([0-9a-f-]{36})", out)[1]  # type: ignore[index]

        view = json.loads(await ok("conversations", "show", conversation_id, "--user", "ann",
                                   "--format", "json"))  # fmt: skip
        assert [m["role"] for m in view["messages"]] == ["user", "assistant", "user", "assistant"]
        assert view["messages"][0]["content"] == "My cat is called Miso."
        assert view["title"] == "About Miso"
        second = view["messages"][3]
        assert second["prompt_tokens"] > view["messages"][1]["prompt_tokens"]  # carried turn 1

        table = await ok("conversations", "show", conversation_id, "--user", "ann")
        assert "4 messages" in table and "What is my cat called?" in table

        # resuming prints the history, then goes on
        resumed = await ok("chat", "--user", "ann", "--conversation", conversation_id,
                           stdin="And what colour is it?\n")  # fmt: skip
        assert resumed.index("My cat is called Miso.") < resumed.index("And what colour")
        assert resumed.count("assistant>") == 3

        # another user's conversation reads as missing
        stranger = await refused("conversations", "show", conversation_id, "--user", "bo")
        assert "not found" in stranger

        await ok("conversations", "rename", conversation_id, "Miso the cat", "--user", "ann")
        listed = json.loads(await ok("conversations", "list", "--user", "ann", "--format", "json"))
        assert [(i["title"], i["message_count"]) for i in listed["items"]] == [("Miso the cat", 6)]

        await ok("conversations", "delete", conversation_id, "--user", "ann")
        assert "not found" in await refused(
            "conversations", "show", conversation_id, "--user", "ann"
        )


async def test_a_chat_turn_that_fails_says_why_and_the_chat_exits_1(settings: Settings) -> None:
    async with stack(settings):
        # the provider refuses the key: the turn fails, and the failure is kept
        done = await llmbus("chat", "--user", "dee", "--model", "fail-401",
                            stdin="hello?\n")  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and "assistant>" not in done.stdout
        conversation_id = re.search(r"conversation ([0-9a-f-]{36})", done.stdout)[1]  # type: ignore[index]
        view = json.loads(await ok("conversations", "show", conversation_id, "--user", "dee",
                                   "--format", "json"))  # fmt: skip
        [failure] = view["failures"]
        assert failure["error_type"] in done.stderr
        # a first turn that failed at the provider is kept, so the user sees what was tried
        assert [m["content"] for m in view["messages"]] == ["hello?"]

        unknown = await llmbus("chat", "--user", "dee", "--model", "no-such-model", stdin="hi\n")
        assert unknown.returncode == 1 and "unknown model 'no-such-model'" in unknown.stderr

        assert "not both" in await refused("chat", "--conversation", "c1", "--title", "t")


async def test_a_first_turn_that_is_refused_leaves_no_conversation_behind(
    settings: Settings,
) -> None:
    async with stack(settings) as client:
        # the model is refused before anything is stored: no empty conversation to list forever
        unknown = await llmbus("chat", "--user", "eve", "--model", "no-such-model",
                               "--title", "Doomed", stdin="hi\n")  # fmt: skip
        assert unknown.returncode == 1 and "unknown model 'no-such-model'" in unknown.stderr
        assert "resume with" not in unknown.stdout
        assert (await client.conversations.list("eve")).items == []

        # a chat left before its first line stores nothing either
        await ok("chat", "--user", "eve", "--model", MODEL, stdin="")
        assert (await client.conversations.list("eve")).items == []

        # the first line that is answered starts the conversation, with its title and system
        out = await ok("chat", "--user", "eve", "--model", MODEL, "--title", "Second try",
                       "--system", "Be brief.", stdin="hi again\n")  # fmt: skip
        [listed] = (await client.conversations.list("eve")).items
        assert (listed.title, listed.model, listed.message_count) == ("Second try", MODEL, 3)
        assert f"--conversation {listed.conversation_id}" in out


async def test_conversations_list_pages_with_a_cursor(settings: Settings) -> None:
    async with stack(settings) as client:
        for i in range(3):
            await client.conversations.create("cy", f"conversation {i}")
        first = await ok("conversations", "list", "--user", "cy", "--limit", "2")
        cursor = re.search(r"next cursor: (\S+)", first)[1]  # type: ignore[index]
        page = json.loads(await ok("conversations", "list", "--user", "cy", "--limit", "2",
                                   "--cursor", cursor, "--format", "json"))  # fmt: skip
        assert [i["title"] for i in page["items"]] == ["conversation 0"]
        assert page["next_cursor"] is None
        assert "conversation 2" in first and "conversation 1" in first


async def test_a_prompt_is_created_updated_labelled_rolled_back_and_rendered(
    settings: Settings, tmp_path: Path
) -> None:
    async with stack(settings):
        created = await ok(
            "prompts", "create", "greeting", "--name", "Greeting",
            "--template", "Hello {{ name }}, welcome to {{ place }}.",
            "--var", "place:string?=the team", "--label", "production", "--author", "ann",
            "--note", "first draft",
        )  # fmt: skip
        assert "version 1" in created
        updated = await ok(
            "prompts", "update", "greeting", "--template", "Hi {{ name }}! Welcome to {{ place }}.",
            "--var", "place:string?=the team", "--author", "bo", "--note", "friendlier",
        )  # fmt: skip
        assert "version 2" in updated
        await ok("prompts", "label", "greeting", "production", "2", "--author", "cy")
        await ok("prompts", "rollback", "greeting", "production", "1", "--author", "cy")

        # production is back on version 1; latest is on version 2
        rendered = await ok("prompts", "render", "greeting", "--set", "name=Ann")
        assert "Hello Ann, welcome to the team." in rendered
        latest = await ok("prompts", "render", "greeting", "--label", "latest",
                          "--set", "name=Ann", "--set", "place=Lisbon")  # fmt: skip
        assert "Hi Ann! Welcome to Lisbon." in latest
        # a string variable takes the text as it is, even when it reads as a number
        as_json = json.loads(await ok("prompts", "render", "greeting", "--set", "name=42",
                                      "--format", "json"))  # fmt: skip
        assert as_json["version"] == 1
        assert as_json["messages"] == [
            {"role": "user", "content": "Hello 42, welcome to the team."}
        ]

        shown = json.loads(await ok("prompts", "show", "greeting", "--format", "json"))
        assert shown["labels"] == {"latest": 2, "production": 1}
        history = await ok("prompts", "history", "greeting")
        for seen in ("PromptCreated", "PromptVersionCreated", "LabelMoved", "RolledBack",
                     "first draft", "friendlier", "bo", "cy"):  # fmt: skip
            assert seen in history, seen

        # a chat template from a YAML file
        turns = tmp_path / "triage.yaml"
        turns.write_text(
            "- {role: system, content: 'You triage tickets for {{ team }}.'}\n"
            "- {role: user, content: 'Ticket: {{ ticket }}'}\n"
        )
        await ok("prompts", "create", "triage", "--template-file", str(turns),
                 "--var", "team:string=support")  # fmt: skip
        chat = json.loads(await ok("prompts", "render", "triage", "--vars-json",
                                   '{"ticket": "the login page is down"}', "--format", "json"))  # fmt: skip
        assert chat["messages"] == [
            {"role": "system", "content": "You triage tickets for support."},
            {"role": "user", "content": "Ticket: the login page is down"},
        ]
        listed = await ok("prompts", "list")
        assert "greeting" in listed and "triage" in listed and "summarizer" in listed

        assert "duplicate" in await refused("prompts", "create", "greeting", "--template", "x")


async def test_rendering_without_a_required_variable_names_it(settings: Settings) -> None:
    async with stack(settings):
        await ok("prompts", "create", "invite", "--template", "Invite {{ guest }} to {{ event }}.")
        message = await refused("prompts", "render", "invite", "--set", "event=the launch")
        assert "guest" in message and len(message.strip().splitlines()) == 1
        assert "--set expects NAME=VALUE" in await refused(
            "prompts", "render", "invite", "--set", "guest"
        )
        assert "type must be one of" in await refused(
            "prompts", "create", "bad", "--template", "{{ n }}", "--var", "n:float"
        )


async def test_the_playground_prints_the_cost_preview_before_the_output(
    settings: Settings,
) -> None:
    async with stack(settings) as client:
        out = await ok(
            "prompts", "test", "summarizer", "--model", MODEL, "--max-tokens", "60",
            "--set", "text=Event sourcing keeps every change as an event.", "--set", "max_words=12",
        )  # fmt: skip
        assert out.index("cost preview") < out.index("output") < out.index("true cost")
        assert "You asked:" in out
        assert "worst case, with 60 output tokens" in out

        async def projected() -> bool:
            return await projected_requests(client) == 1

        await wait_for(projected, what="the playground call to be projected")
        rows = (await client.usage.query(["prompt_version"])).rows
        assert [(r["prompt_version"], r["requests"]) for r in rows] == [("summarizer@1", 1)]

        assert "prompt" in await refused("prompts", "test", "no-such-prompt", "--set", "a=1")


def test_the_conversation_commands_say_clearly_when_no_stack_is_running(tmp_path: Path) -> None:
    for args in (["conversations", "list"], ["prompts", "list"]):
        result = subprocess.run(
            [sys.executable, "-m", "llmbus", *args],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )  # fmt: skip
        assert result.returncode == 1
        assert "no NATS server" in result.stderr and "Traceback" not in result.stderr


def test_the_conversation_and_prompt_commands_do_not_import_litellm() -> None:
    probe = (
        "import sys\n"
        "import llmbus.cli.app, llmbus.cli.chat, llmbus.cli.conversations, llmbus.cli.prompts\n"
        "import llmbus.client\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'duckdb')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
