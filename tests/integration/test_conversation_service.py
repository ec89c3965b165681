"""The conversation service: chats that carry their history, owned conversations, managed prompts,
on a real nats-server with the completion worker, on SQLite and (where reachable) PostgreSQL."""

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.client import Client
from llmbus.services.conversation.application import ConversationApplication, Fit, NewConversation
from llmbus.services.conversation.application.turns import completion_request
from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.domain.history import trim_history
from llmbus.services.conversation.outbox import ConversationRoute
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.contracts import CompletionReceived
from llmbus.shared.contracts.completion import TokenUsage
from llmbus.shared.errors import RequestError
from llmbus.shared.eventstore import open_store
from llmbus.shared.limits import Limits
from llmbus.shared.settings import Settings, load_settings
from support import EventLog, pipeline, running, spawn_service, stop_process, wait_for

MODEL = "fake-gpt"
# a catalog model whose context window holds only a few turns
TINY = {
    "name": "tiny-window",
    "litellm_model": "openai/tiny-window",
    "api_key_env": "LLMBUS_TEST_FAKE_KEY",
    "input_cost_per_token": 1e-6,
    "output_cost_per_token": 2e-6,
    "max_input_tokens": 90,
    "max_output_tokens": 20,
}
TEMPLATE = "Summarise {{ text }} in {{ words }} words."
VARIABLES = [{"name": "words", "type": "integer", "default": 50}]


@pytest.fixture(params=["sqlite", "postgres"])
def chat_settings(
    request: pytest.FixtureRequest, settings: Settings, config_file: Path
) -> Settings:
    """The test stack's settings plus a small-window model; on PostgreSQL for the second run."""
    config = yaml.safe_load(config_file.read_text())
    config["models"].append(TINY | {"api_base": settings.model(MODEL).api_base})  # type: ignore[union-attr]
    if request.param == "postgres":
        pg = request.getfixturevalue("postgres_schema")
        config["event_store"] = "postgres"
        config["postgres"] = pg.model_dump()
    config_file.write_text(yaml.safe_dump(config))
    return load_settings()


@contextlib.asynccontextmanager
async def conversation_stack(
    settings: Settings,
) -> AsyncIterator[tuple[NatsClient, EventLog, Client]]:
    """The completion worker and the conversation service in this loop, and a client."""
    async with (
        pipeline(settings, with_usage=False) as (nc, events, client),
        running(serve_conversation, settings),
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        yield nc, events, client


@contextlib.asynccontextmanager
async def watching_requests(nc: NatsClient) -> AsyncIterator[list[Msg]]:
    """Every CompletionRequested published from now on, as NATS messages (with headers)."""
    seen: list[Msg] = []

    async def collect(msg: Msg) -> None:
        seen.append(msg)

    sub = await nc.subscribe(subjects.COMPLETION_REQUESTED, cb=collect)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


async def refusal(call: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        await call
    return caught.value


async def test_a_three_turn_chat_sends_the_history_with_each_turn(
    chat_settings: Settings,
) -> None:
    async with (
        conversation_stack(chat_settings) as (nc, _, client),
        watching_requests(nc) as requests,
    ):
        view = await client.conversations.create(
            "ann", "  Event stores  ", model=MODEL, system="Be brief.", metadata={"topic": "es"}
        )
        assert view.title == "Event stores" and view.metadata == {"topic": "es"}
        assert [(m.role, m.content) for m in view.messages] == [("system", "Be brief.")]

        replies = []
        for question in ("What is an event?", "And a stream?", "How do they relate?"):
            reply = await client.chat("ann", view.conversation_id, question)
            assert reply.status == "completed", reply
            assert reply.message is not None and reply.message.content
            assert reply.cost_usd > 0 and reply.prompt_tokens > 0
            replies.append(reply)
        await wait_for(lambda: len(requests) == 3, what="three CompletionRequested")

    sent = [json.loads(msg.data) for msg in requests]
    assert [msg.headers or {} for msg in requests] == [
        {subjects.MSG_ID_HEADER: f"conversation:{r.request_id}"} for r in replies
    ]
    assert [s["request_id"] for s in sent] == [r.request_id for r in replies]
    assert {(s["conversation_id"], s["user_id"], s["model"]) for s in sent} == {
        (view.conversation_id, "ann", MODEL)
    }
    answers_ = [r.message.content for r in replies if r.message]
    assert sent[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is an event?"},
        {"role": "assistant", "content": answers_[0]},
        {"role": "user", "content": "And a stream?"},
    ]
    assert sent[2]["messages"] == [
        *sent[1]["messages"],
        {"role": "assistant", "content": answers_[1]},
        {"role": "user", "content": "How do they relate?"},
    ]

    async with conversation_stack(chat_settings) as (_, _, client):
        stored = await client.conversations.get("ann", view.conversation_id)
    assert [m.role for m in stored.messages] == ["system"] + ["user", "assistant"] * 3
    assert [m.content for m in stored.messages if m.role == "assistant"] == answers_
    assert stored.pending == [] and stored.failures == [] and stored.trims == []
    assert stored.total_cost_usd == pytest.approx(sum(r.cost_usd for r in replies))
    assert stored.last_activity_at >= stored.messages[-1].at


def stored_turns(settings: Settings, conversation_id: str) -> list[Any]:
    """The MessageAdded events stored for a conversation, as stored: topic and state bytes."""
    app = open_store(ConversationApplication, settings, "conversation")
    try:
        stored = app.recorder.select_events(UUID(conversation_id))
        return [e for e in stored if e.topic.endswith("MessageAdded")]
    finally:
        app.close()


async def test_a_stored_turn_keeps_no_history_but_its_request_carries_all_of_it(
    chat_settings: Settings,
) -> None:
    async with (
        conversation_stack(chat_settings) as (nc, _, client),
        watching_requests(nc) as requests,
    ):
        view = await client.conversations.create("lee", "Growing", model=MODEL, system="Be brief.")
        questions = [f"Question number {n:02d}: and then what happened?" for n in range(1, 7)]
        replies = [await client.chat("lee", view.conversation_id, q) for q in questions]
        assert all(r.status == "completed" and r.message for r in replies)
        await wait_for(lambda: len(requests) == 6, what="six CompletionRequested")
    answers_ = [r.message.content for r in replies if r.message and r.message.content]
    assert len(answers_) == 6

    # each turn's request carries the whole history before it, as it did when stored whole
    sent = [json.loads(msg.data) for msg in requests]
    for n, request in enumerate(sent):
        history = [{"role": "system", "content": "Be brief."}]
        for question, answer in zip(questions[:n], answers_[:n], strict=True):
            history += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        assert request["messages"] == [*history, {"role": "user", "content": questions[n]}]
        assert request["request_id"] == replies[n].request_id
        assert (request["conversation_id"], request["user_id"]) == (view.conversation_id, "lee")
    assert [msg.headers for msg in requests] == [
        {subjects.MSG_ID_HEADER: f"conversation:{r.request_id}"} for r in replies
    ]

    # ... but what is stored of turn N is the same size as turn 1, and names no earlier turn
    stored = await asyncio.to_thread(stored_turns, chat_settings, view.conversation_id)
    turns = stored[1:]  # the system message comes first
    assert len(turns) == 6
    sizes = [len(e.state) for e in turns]
    assert max(sizes) - min(sizes) <= 7, sizes  # timestamps without microseconds are shorter
    last = turns[-1].state.decode()
    assert questions[-1] in last
    for earlier in [*questions[:-1], *answers_, "Be brief."]:
        assert earlier not in last


def test_the_outbox_rebuilds_each_turns_trimmed_request_from_the_conversation() -> None:
    """No NATS: turns sent through the application, trimmed by a fitter that keeps the last
    `keep` words, are routed back to exactly the messages the fitter chose."""
    app = ConversationApplication()  # in memory
    chosen: dict[str, list[dict[str, str]]] = {}

    def fit(model: str, messages: list[dict[str, str]], max_tokens: int | None) -> Fit:
        kept, dropped = trim_history(messages, words, limit=12)
        chosen[messages[-1]["content"]] = kept
        return Fit(kept, dropped, 12)

    view = app.start("nia", "Trimmed", model=MODEL, system="Be brief.")
    conversation_id = str(view.id)
    for n in range(1, 6):
        content = f"question {n} has five words"
        limits = Limits(1_000_000, 1_048_576)
        app.send("nia", conversation_id, content, f"r-{n}", None, {"max_tokens": 5}, fit, limits)
        app.record_outcomes([answer(f"r-{n}", conversation_id, f"answer {n} here")])

    notifications = app.recorder.select_notifications(0, 100)
    inline, prepared = ConversationRoute(app), ConversationRoute(app)
    prepared.prepare(notifications)
    for route in (inline, prepared):
        published = [
            json.loads(out.payload)
            for n in notifications
            for out in route(app.mapper.to_domain_event(n))
        ]
        assert [p["request_id"] for p in published] == [f"r-{n}" for n in range(1, 6)]
        for request in published:
            question = request["messages"][-1]["content"]
            assert request["messages"] == chosen[question]
            assert request["messages"][0] == {"role": "system", "content": "Be brief."}
            assert request["params"] == {"max_tokens": 5}
    assert len(chosen["question 5 has five words"]) < 1 + 2 * 5 - 1  # it was trimmed


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def answer(request_id: str, conversation_id: str, content: str) -> CompletionReceived:
    return CompletionReceived(
        request_id=request_id, model=MODEL, provider="openai", content=content,
        usage=TokenUsage(prompt_tokens=5, completion_tokens=3), cost_usd=0.0, latency_ms=1.0,
        conversation_id=conversation_id, user_id="nia",
    )  # fmt: skip


async def test_a_turn_stored_with_its_whole_request_is_still_published_and_answered(
    chat_settings: Settings,
) -> None:
    """A MessageAdded stored before requests were kept compact carries the request, messages
    and all: the outbox publishes it as stored, and the conversation carries on after it."""
    app = open_store(ConversationApplication, chat_settings, "conversation")
    try:
        conversation = app.start("mo", "From before", model=MODEL, system="Be brief.")
        whole = completion_request(
            conversation, "old-turn-1", MODEL,
            [*conversation.history(), {"role": "user", "content": "Still there?"}],
            {"max_tokens": 40},
        )  # fmt: skip
        conversation._add_message("user", "Still there?", "old-turn-1", whole)
        app.save(conversation)
    finally:
        app.close()
    conversation_id = str(conversation.id)

    async with (
        pipeline(chat_settings, with_usage=False) as (nc, _, client),
        watching_requests(nc) as requests,
        running(serve_conversation, chat_settings),
    ):
        await wait_for(lambda: len(requests) == 1, 60, "the stored request")
        (published,) = requests
        assert json.loads(published.data) == whole
        assert published.headers == {subjects.MSG_ID_HEADER: "conversation:old-turn-1"}

        async def answered() -> bool:
            stored = await client.conversations.get("mo", conversation_id)
            return stored.pending == []

        await wait_for(answered, what="the old turn's reply")
        reply = await client.chat("mo", conversation_id, "And now?")
        assert reply.status == "completed" and reply.message
        await wait_for(lambda: len(requests) == 2, what="the new turn's request")

    stored = await stored_contents(chat_settings, conversation_id)
    assert json.loads(requests[1].data)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Still there?"},
        {"role": "assistant", "content": stored[2]},
        {"role": "user", "content": "And now?"},
    ]


async def stored_contents(settings: Settings, conversation_id: str) -> list[str | None]:
    """The contents of a conversation's turns, read from its store."""

    def read() -> list[str | None]:
        app = open_store(ConversationApplication, settings, "conversation")
        try:
            conversation: Conversation = app.repository.get(UUID(conversation_id))
            return [t.content for t in conversation.messages]
        finally:
            app.close()

    return await asyncio.to_thread(read)


async def test_another_users_conversation_reads_as_missing(settings: Settings) -> None:
    async with conversation_stack(settings) as (_, _, client):
        ann = await client.conversations.create("ann", "Private", model=MODEL)
        missing = "00000000-0000-4000-8000-000000000000"
        for call in (
            lambda c: client.conversations.get("bob", c),
            lambda c: client.conversations.rename("bob", c, "Mine now"),
            lambda c: client.conversations.delete("bob", c),
            lambda c: client.chat("bob", c, "hello?"),
        ):
            theirs = await refusal(call(ann.conversation_id))
            absent = await refusal(call(missing))
            assert theirs.error_type == absent.error_type == "not_found"
            assert theirs.message.replace(ann.conversation_id, "<id>") == absent.message.replace(
                missing, "<id>"
            )
        assert (await client.conversations.list("bob")).items == []
        # nothing of bob's attempts reached ann's conversation
        intact = await client.conversations.get("ann", ann.conversation_id)
        assert intact.title == "Private" and intact.messages == []

        deleted = await client.conversations.delete("ann", ann.conversation_id)
        assert deleted.deleted and deleted.conversation_id == ann.conversation_id
        gone = await refusal(client.conversations.get("ann", ann.conversation_id))
        assert gone.error_type == "not_found"
        assert (await client.conversations.list("ann")).items == []
        garbage = await refusal(client.conversations.get("ann", "not a uuid"))
        assert garbage.error_type == "not_found"


async def test_conversations_are_listed_by_last_activity_a_page_at_a_time(
    chat_settings: Settings,
) -> None:
    async with conversation_stack(chat_settings) as (_, _, client):
        made = [
            (await client.conversations.create("cy", f"Chat {i}", model=MODEL)).conversation_id
            for i in range(5)
        ]
        await client.conversations.create("dee", "Not cy's", model=MODEL)
        await client.chat("cy", made[1], "bring me to the top")
        await client.conversations.rename("cy", made[3], "Renamed")

        pages, cursor = [], None
        while True:
            page = await client.conversations.list("cy", cursor=cursor, limit=2)
            pages.append([item.conversation_id for item in page.items])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == [[made[3], made[1]], [made[4], made[2]], [made[0]]]
        first = (await client.conversations.list("cy", limit=1)).items[0]
        assert first.title == "Renamed" and first.message_count == 0

        everything = (await client.conversations.list("cy", limit=100)).items
        stamps = [item.last_activity_at for item in everything]
        assert stamps == sorted(stamps, reverse=True) and len(everything) == 5
        chatted = next(item for item in everything if item.conversation_id == made[1])
        assert chatted.message_count == 2 and chatted.total_cost_usd > 0

        bad = await refusal(client.conversations.list("cy", cursor="not-a-cursor"))
        assert bad.error_type == "invalid_request" and "cursor" in bad.message
        too_many = await refusal(client.conversations.list("cy", limit=101))
        assert too_many.error_type == "invalid_request" and "limit" in too_many.message


async def test_a_prompt_is_created_updated_labelled_rolled_back_and_rendered(
    chat_settings: Settings,
) -> None:
    async with conversation_stack(chat_settings) as (_, events, client):
        created = await client.prompts.create(
            "summary", "Summary", TEMPLATE, variables=VARIABLES, labels=["production"],
            author="ann", description="Short summaries",
        )  # fmt: skip
        assert created.version == 1 and created.labels == {"latest": 1, "production": 1}
        assert [(v.name, v.type, v.required) for v in created.variables] == [
            ("text", "string", True),
            ("words", "integer", True),
        ]

        updated = await client.prompts.update(
            "summary", template="In {{ words }} words, summarise: {{ text }}", author="bob",
            note="text last",
        )  # fmt: skip
        assert updated.version == 2 and updated.author == "bob"
        assert updated.labels == {"latest": 2, "production": 1}

        labelled = await client.prompts.label("summary", "production", 2, author="cy")
        assert labelled.version == 2 and labelled.labels["production"] == 2
        rendered = await client.prompts.render("summary", {"text": "the news"})
        assert rendered.version == 2
        assert rendered.messages[0].content == "In 50 words, summarise: the news"

        rolled = await client.prompts.rollback("summary", "production", 1, author="dee")
        assert rolled.version == 1 and rolled.labels == {"latest": 2, "production": 1}
        rendered = await client.prompts.render("summary", {"text": "the news", "words": 10})
        assert (rendered.version, rendered.messages[0].content) == (
            1,
            "Summarise the news in 10 words.",
        )
        latest = await client.prompts.render("summary", {"text": "x"}, label="latest")
        assert latest.version == 2
        first = await client.prompts.get("summary", version=1)
        assert first.template == TEMPLATE and first.author == "ann"

        history = await client.prompts.history("summary")
        assert [(e.event, e.version, e.label, e.author) for e in history] == [
            ("PromptCreated", 1, None, "ann"),
            ("PromptVersionCreated", 2, None, "bob"),
            ("LabelMoved", 2, "production", "cy"),
            ("RolledBack", 1, "production", "dee"),
        ]
        assert "template" in history[1].changes and history[1].note == "text last"

        listed = {p.key: p for p in await client.prompts.list()}
        assert listed["summary"].source == "managed" and listed["summary"].latest_version == 2
        assert {"json-extractor", "summarizer"} <= {
            k for k, p in listed.items() if p.source == "domain"
        }
        assert [p.key for p in await client.prompts.list(include_domain=False)] == ["summary"]

        changes = "llmbus.prompt.events.summary"
        await wait_for(lambda: len(events.on(changes)) == 4, what="four PromptChanged")
        assert [(e["event"], e["version"], e["label"]) for e in events.on(changes)] == [
            ("PromptCreated", 1, None),
            ("PromptVersionCreated", 2, None),
            ("LabelMoved", 2, "production"),
            ("RolledBack", 1, "production"),
        ]


async def test_duplicate_keys_missing_variables_and_deactivated_prompts_are_refused(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (nc, events, client):
        await client.prompts.create("greeting", "Greeting", "Hello {{ name }}!")
        again = await refusal(client.prompts.create("greeting", "Other", "Hi {{ who }}"))
        assert again.error_type == "duplicate_key" and "greeting" in again.message
        domain = await refusal(client.prompts.create("json-extractor", "Mine", "{{ x }}"))
        assert domain.error_type == "duplicate_key" and "json-extractor" in domain.message
        assert (await client.prompts.get("greeting")).template == "Hello {{ name }}!"

        missing = await refusal(client.prompts.render("greeting", {}))
        assert missing.error_type == "invalid_variables" and "'name'" in missing.message
        await client.prompts.create("count", "Count", "Count to {{ n }}", variables=[
            {"name": "n", "type": "integer"}
        ])  # fmt: skip
        wrong = await refusal(client.prompts.render("count", {"n": "three"}))
        assert wrong.error_type == "invalid_variables" and "'n'" in wrong.message
        unknown = await refusal(client.prompts.render("greeting", {"name": "a", "nmae": "b"}))
        assert unknown.error_type == "invalid_variables" and "nmae" in unknown.message
        nowhere = await refusal(client.prompts.render("no-such-prompt", {}))
        assert nowhere.error_type == "not_found"

        await client.prompts.deactivate("greeting", author="ann")
        inactive = await refusal(client.prompts.render("greeting", {"name": "Ann"}))
        assert inactive.error_type == "prompt_inactive"
        resolved = await nc.request(subjects.PROMPT_RESOLVE, b'{"key": "greeting"}', timeout=5)
        assert json.loads(resolved.data)["active"] is False
        await client.prompts.activate("greeting", author="ann")
        rendered = await client.prompts.render("greeting", {"name": "Ann"})
        assert rendered.messages[0].content == "Hello Ann!"

        frozen = await refusal(client.prompts.update("json-extractor", name="Mine"))
        assert frozen.error_type == "invalid_request" and "domain prompt" in frozen.message
        domain_render = await client.prompts.render(
            "summarizer", {"text": "Event sourcing stores facts."}
        )
        assert domain_render.version == 1 and any(
            "Event sourcing stores facts." in m.content for m in domain_render.messages
        )
        await wait_for(
            lambda: len(events.on("llmbus.prompt.events.greeting")) == 3, what="prompt events"
        )


async def test_a_preview_prices_the_rendered_prompt_without_calling_a_model(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (_, events, client):
        await client.prompts.create("ask", "Ask", "Answer briefly: {{ question }}")
        preview = await client.prompts.preview(
            "ask", {"question": "what is a ledger?"}, "llmbus-sim/small", params={"max_tokens": 40}
        )
        messages = [{"role": "user", "content": "Answer briefly: what is a ledger?"}]
        catalog = ModelCatalog(settings)
        assert [m.model_dump() for m in preview.messages] == messages
        assert preview.prompt_tokens == catalog.count_tokens("llmbus-sim/small", messages)
        assert preview.max_output_tokens == 40
        assert preview.input_cost_usd == pytest.approx(preview.prompt_tokens * 0.5e-6)
        assert preview.worst_case_cost_usd == pytest.approx(
            float(catalog.worst_case_cost("llmbus-sim/small", messages, 40))
        )
        unknown = await refusal(client.prompts.preview("ask", {"question": "x"}, "nope"))
        assert unknown.error_type == "invalid_request" and "nope" in unknown.message
    assert events.terminal() == []  # nothing went to a model


async def test_the_oldest_turns_are_trimmed_to_fit_a_small_context_window(
    chat_settings: Settings,
) -> None:
    async with (
        conversation_stack(chat_settings) as (nc, _, client),
        watching_requests(nc) as requests,
    ):
        view = await client.conversations.create(
            "eve", "Long talk", model="tiny-window", system="Answer in one line."
        )
        turns = [f"Turn {i}: tell me one more thing about event sourcing please" for i in range(4)]
        replies = [await client.chat("eve", view.conversation_id, text) for text in turns]
        assert all(r.status == "completed" for r in replies)
        await wait_for(lambda: len(requests) == 4, what="four CompletionRequested")
        stored = await client.conversations.get("eve", view.conversation_id)

    assert replies[0].trimmed == 0 and replies[-1].trimmed > 0
    last = json.loads(requests[-1].data)["messages"]
    assert last[0] == {"role": "system", "content": "Answer in one line."}
    assert last[-1] == {"role": "user", "content": turns[-1]}
    assert last[1]["role"] == "user"  # never opens on an assistant turn
    assert len(last) == 1 + 2 * 4 - 1 - replies[-1].trimmed
    catalog = ModelCatalog(chat_settings)
    assert catalog.count_tokens("tiny-window", last) <= 90 - 20
    trims = {t.request_id: t for t in stored.trims}
    assert set(trims) == {r.request_id for r in replies if r.trimmed}
    assert trims[replies[-1].request_id].dropped == replies[-1].trimmed
    assert trims[replies[-1].request_id].kept == len(last)
    assert trims[replies[-1].request_id].context_window == 90
    assert len(stored.messages) == 1 + 2 * 4  # trimming leaves the conversation whole
    # the turn stores how many turns its request left out, and the outbox rebuilt it from that
    last_turn = (await asyncio.to_thread(stored_turns, chat_settings, view.conversation_id))[-1]
    assert json.loads(last_turn.state)["request"] == {
        "model": "tiny-window", "params": {}, "dropped": replies[-1].trimmed
    }  # fmt: skip


async def test_a_failed_completion_is_recorded_on_the_conversation_with_its_reason(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (_, _, client):
        view = await client.conversations.create("fay", "Unlucky", model="fail-401")
        failed = await client.chat("fay", view.conversation_id, "Hello?")
        assert failed.status == "failed" and failed.message is None
        assert failed.error_type == "authentication" and "fail-401" in (failed.error or "")
        assert "sk-test-fake-key" not in (failed.error or "")

        stored = await client.conversations.get("fay", view.conversation_id)
        assert [(f.request_id, f.error_type) for f in stored.failures] == [
            (failed.request_id, "authentication")
        ]
        assert stored.pending == [] and [m.role for m in stored.messages] == ["user"]

        # the same conversation carries on with another model
        reply = await client.chat("fay", view.conversation_id, "Try again", model=MODEL)
        assert reply.status == "completed"
        # a repeated send of the same turn returns its stored outcome, not a new call
        again = await client.chat(
            "fay", view.conversation_id, "Hello?", request_id=failed.request_id
        )
        assert (again.status, again.error_type) == ("failed", "authentication")


def test_a_conversation_its_first_turn_starts_is_titled_by_the_first_line_unless_named() -> None:
    assert NewConversation().title_for("\n  Plan   a trip \nto Lisbon") == "Plan a trip"
    long = NewConversation().title_for("word " * 40)
    assert len(long) == 60 and long.endswith("…")
    assert NewConversation(title="Mine").title_for("Plan a trip") == "Mine"


async def test_a_first_turn_starts_its_conversation_and_a_refused_one_leaves_none(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (_, _, client):
        # refused before anything is stored: no conversation is left for the list
        for model, params, words in (
            ("no-such", {}, "no-such"),
            (MODEL, {"temperature": 9}, "temperature"),
            (None, {}, "model"),
        ):
            error = await refusal(client.chat("ida", None, "Hi", model=model, params=params))
            assert error.error_type == "invalid_request" and words in error.message, error
        assert (await client.conversations.list("ida")).items == []

        # answered: the conversation holds the turn, its model, and a title from its first line
        first = await client.chat("ida", None, "Plan a trip\nto Lisbon, please", model=MODEL,
                                  system="Be brief.", metadata={"channel": "sdk"})  # fmt: skip
        assert first.status == "completed"
        view = await client.conversations.get("ida", first.conversation_id)
        assert (view.title, view.model, view.metadata) == ("Plan a trip", MODEL, {"channel": "sdk"})
        assert [m.role for m in view.messages] == ["system", "user", "assistant"]
        # a re-send of the first turn finds the conversation it started
        again = await client.chat("ida", None, "Plan a trip\nto Lisbon, please",
                                  request_id=first.request_id, model=MODEL)  # fmt: skip
        assert (again.conversation_id, again.status) == (first.conversation_id, "completed")
        [listed] = (await client.conversations.list("ida")).items
        assert listed.conversation_id == first.conversation_id and listed.message_count == 3
        # later turns use the conversation's model
        assert (await client.chat("ida", first.conversation_id, "And Porto?")).status == (
            "completed"
        )
        # a new conversation's fields do not go with an existing one
        mixed = await refusal(client.chat("ida", first.conversation_id, "Hi", title="New"))
        assert mixed.error_type == "invalid_request" and "conversation_id" in mixed.message

        # a first turn whose failure comes later keeps its conversation, showing the failure
        failed = await client.chat("ida", None, "Hello?", model="fail-401", title="Unlucky")
        assert (failed.status, failed.error_type) == ("failed", "authentication")
        kept = await client.conversations.get("ida", failed.conversation_id)
        assert [m.content for m in kept.messages] == ["Hello?"]
        assert [f.request_id for f in kept.failures] == [failed.request_id]


async def test_a_send_without_waiting_is_answered_later_on_the_conversation(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (_, _, client):
        view = await client.conversations.create("gus", "Fire and forget", model=MODEL)
        pending = await client.chat("gus", view.conversation_id, "Later is fine", wait=False)
        assert pending.status in ("pending", "completed")

        async def answered() -> bool:
            stored = await client.conversations.get("gus", view.conversation_id)
            return [m.role for m in stored.messages] == ["user", "assistant"]

        await wait_for(answered, what="the reply to be recorded")
        stored = await client.conversations.get("gus", view.conversation_id)
        assert stored.messages[1].request_id == pending.request_id and stored.pending == []


async def test_bad_requests_get_clear_errors_and_the_service_keeps_serving(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (nc, _, client):
        malformed = await nc.request(subjects.CONVERSATION_CREATE, b"{not json", timeout=5)
        assert json.loads(malformed.data)["error_type"] == "invalid_request"
        for bad, words in (
            (client.conversations.create("hal", "   "), "title"),
            (client.conversations.create("hal", "x" * 201), "title"),
            (client.conversations.create("", "No user"), "user_id"),
            (client.prompts.create("Bad Key", "Name", "{{ x }}"), "key"),
            (client.prompts.create("ok-key", "Name", "{{ x }}", variables=[{"name": "y"}]), "'y'"),
            (client.prompts.create("ok-key", "Name", "  "), "empty"),
        ):
            error = await refusal(bad)
            assert error.error_type == "invalid_request" and words in error.message, error
        view = await client.conversations.create("hal", "Fine")
        empty = await refusal(client.chat("hal", view.conversation_id, "   "))
        assert empty.error_type == "invalid_request" and "empty" in empty.message
        no_model = await refusal(client.chat("hal", view.conversation_id, "Hi"))
        assert no_model.error_type == "invalid_request" and "model" in no_model.message
        bad_params = await refusal(
            client.chat("hal", view.conversation_id, "Hi", model=MODEL, params={"temperature": 9})
        )
        assert bad_params.error_type == "invalid_request" and "temperature" in bad_params.message
        unknown = await refusal(client.chat("hal", view.conversation_id, "Hi", model="no-such"))
        assert unknown.error_type == "invalid_request" and "no-such" in unknown.message
        # nothing half-written: the refused turns left no trace
        stored = await client.conversations.get("hal", view.conversation_id)
        assert stored.messages == [] and stored.pending == []
        assert (await client.chat("hal", view.conversation_id, "Hi", model=MODEL)).status == (
            "completed"
        )


async def test_llmbus_serve_conversation_runs_as_its_own_process(
    settings: Settings, config_file: Path
) -> None:
    async with pipeline(settings, with_usage=False) as (nc, _, client):
        async with running(serve_conversation, settings):
            await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the in-process one")
            before = await client.conversations.create("ivy", "Before the restart", model=MODEL)
        process = spawn_service("conversation", config_file)
        try:
            await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "serve conversation")
            # its listing is rebuilt from the store at start
            page = await client.conversations.list("ivy")
            assert [item.conversation_id for item in page.items] == [before.conversation_id]
            reply = await client.chat("ivy", before.conversation_id, "Still there?")
            assert reply.status == "completed"
        finally:
            await asyncio.to_thread(stop_process, process, signal.SIGTERM)
        assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""


async def test_a_playground_run_previews_the_cost_then_calls_the_model_by_prompt_version(
    settings: Settings,
) -> None:
    async with conversation_stack(settings) as (_, _, client):
        await client.prompts.create("haiku", "Haiku", "Write a haiku about {{ topic }}.")
        first = await client.prompts.playground("haiku", {"topic": "queues"}, MODEL, user_id="ann")
        assert first.preview.version == 1 and first.preview.worst_case_cost_usd > 0
        assert first.reply.content and first.reply.cost_usd > 0
        assert (first.reply.prompt_key, first.reply.prompt_version) == ("haiku", 1)

        # an update is announced on llmbus.prompt.events.haiku: workers drop their cached copy
        await client.prompts.update("haiku", template="Write a limerick about {{ topic }}.")
        second = await client.prompts.playground("haiku", {"topic": "queues"}, MODEL)
        assert (second.preview.version, second.reply.prompt_version) == (2, 2)
        assert second.preview.messages[0].content == "Write a limerick about queues."


async def test_in_metadata_only_mode_no_message_content_reaches_the_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="llmbus")
    private = settings.model_copy(
        update={"completion": settings.completion.model_copy(update={"privacy": "metadata_only"})}
    )
    secret = "my-card-4111-1111-1111-1111"
    async with conversation_stack(private) as (_, _, client):
        view = await client.conversations.create("kim", "Private", model=MODEL)
        reply = await client.chat("kim", view.conversation_id, f"remember {secret}")
        # the events carry no reply text in this mode, so the conversation keeps none
        assert reply.status == "completed" and reply.message and reply.message.content is None
        assert reply.completion_tokens > 0
        again = await client.chat("kim", view.conversation_id, "and now?")
        assert again.status == "completed"
        stored = await client.conversations.get("kim", view.conversation_id)
    assert [(m.role, m.content is None) for m in stored.messages] == [
        ("user", False), ("assistant", True), ("user", False), ("assistant", True)
    ]  # fmt: skip
    assert secret not in caplog.text
