"""Attacks on conversations and managed prompts, tried as a second tenant would: with credentials
from `llmbus clients create` and only the documented subjects, on a real nats-server with
authentication on. Each is refused, and what it tried to reach is unchanged."""

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from llmbus.client import Client, CompletionError
from llmbus.services.conversation.application import ConversationApplication, Fit
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts import CompletionReceived
from llmbus.shared.contracts.completion import TokenUsage
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.errors import RequestConflictError, RequestError
from llmbus.shared.limits import Limits
from llmbus.shared.settings import Settings
from support import as_client, new_client, pipeline, running, wait_for, with_budgets

pytestmark = [
    pytest.mark.refusals,
    pytest.mark.skipif(
        bool(os.environ.get("NATS_URL")), reason="needs the embedded server's authentication"
    ),
]
MODEL = "fake-gpt"


@pytest.fixture
async def tenants(settings: Settings) -> dict[str, Path]:
    """alice and carol of team red, bob of team blue, and root, an admin client."""
    return {
        "alice": await new_client(settings, "alice", "alice", team_id="red"),
        "carol": await new_client(settings, "carol", "carol", team_id="red"),
        "bob": await new_client(settings, "bob", "bob", team_id="blue"),
        "root": await new_client(settings, "root", "root", admin=True),
    }


@contextlib.asynccontextmanager
async def chat_stack(settings: Settings, tenants: dict[str, Path]) -> AsyncIterator[Any]:
    """The completion worker and the conversation service, and an SDK client per tenant."""
    async with (
        pipeline(settings, with_usage=False) as (nc, _, operator),
        running(serve_conversation, settings),
        contextlib.AsyncExitStack() as clients,
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        yield {"operator": operator} | {
            name: await clients.enter_async_context(Client(creds=creds, settings=settings))
            for name, creds in tenants.items()
        }


async def refusal(call: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        await call
    return caught.value


async def test_bob_cannot_read_rename_delete_or_send_to_alices_conversation(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with chat_stack(settings, tenants) as sdk:
        alice, bob = sdk["alice"], sdk["bob"]
        view = await alice.conversations.create("alice", "Private", model=MODEL)
        first = await alice.chat("alice", view.conversation_id, "my secret plans")
        assert first.status == "completed"
        theirs = view.conversation_id
        for call in (
            lambda user: bob.conversations.get(user, theirs),
            lambda user: bob.conversations.rename(user, theirs, "Mine now"),
            lambda user: bob.conversations.delete(user, theirs),
            lambda user: bob.chat(user, theirs, "hello?"),
        ):
            assert (await refusal(call("bob"))).error_type == "not_found"
            claimed = await refusal(call("alice"))  # naming alice: refused, not served as her
            assert claimed.error_type == "forbidden" and "admin" in claimed.message
        listing = await refusal(bob.conversations.list("alice"))
        assert listing.error_type == "forbidden"
        assert (await bob.conversations.list("bob")).items == []

        intact = await alice.conversations.get("alice", theirs)
        assert intact.title == "Private" and not intact.deleted
        assert [m.role for m in intact.messages] == ["user", "assistant"]
        # an admin client may act for any user
        assert (await sdk["root"].conversations.get("alice", theirs)).title == "Private"


async def test_bob_naming_alice_in_any_conversation_request_is_forbidden(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with chat_stack(settings, tenants) as sdk:
        bob = sdk["bob"]
        for call in (
            bob.conversations.create("alice", "As alice", model=MODEL),
            bob.chat("alice", None, "start one as alice", model=MODEL),
        ):
            refused = await refusal(call)
            assert refused.error_type == "forbidden" and "'alice'" in refused.message
        assert (await sdk["alice"].conversations.list("alice")).items == []


async def test_bobs_reuse_of_alices_turn_id_is_a_conflict_never_her_answer(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with chat_stack(settings, tenants) as sdk:
        alice, bob = sdk["alice"], sdk["bob"]
        view = await alice.conversations.create("alice", "Private", model=MODEL)
        hers = await alice.chat("alice", view.conversation_id, "secret", request_id="turn-1")
        assert hers.status == "completed" and hers.message and hers.message.content
        answer = hers.message.content

        own = await bob.conversations.create("bob", "Mine", model=MODEL)
        for conversation_id in (own.conversation_id, None):
            refused = await refusal(
                bob.chat("bob", conversation_id, "secret", model=MODEL, request_id="turn-1")
            )
            assert refused.error_type == "request_conflict"
            assert answer not in refused.message and view.conversation_id not in refused.message
        mine = await bob.conversations.get("bob", own.conversation_id)
        assert mine.messages == [] and mine.pending == []
        assert [c.conversation_id for c in (await bob.conversations.list("bob")).items] == [
            own.conversation_id
        ]

        # the owner's re-send of the same turn is idempotent, as before
        again = await alice.chat("alice", view.conversation_id, "secret", request_id="turn-1")
        assert again.status == "completed" and again.message
        assert again.message.content == answer
        stored = await alice.conversations.get("alice", view.conversation_id)
        assert [m.role for m in stored.messages] == ["user", "assistant"]


async def test_a_chat_turn_reusing_anothers_plain_request_id_fails_as_a_conflict(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with chat_stack(settings, tenants) as sdk:
        alice, bob = sdk["alice"], sdk["bob"]
        hers = await alice.complete("secret plan", model=MODEL, request_id="plain-1")
        own = await bob.conversations.create("bob", "Mine", model=MODEL)
        turn = await bob.chat("bob", own.conversation_id, "hi", request_id="plain-1")
        assert (turn.status, turn.error_type) == ("failed", "request_conflict")
        assert hers.content and hers.content not in (turn.error or "")
        mine = await bob.conversations.get("bob", own.conversation_id)
        assert [m.role for m in mine.messages] == ["user"] and mine.pending == []
        assert [f.error_type for f in mine.failures] == ["request_conflict"]


async def test_a_clients_streamed_turn_is_heard_in_its_account_and_no_other(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with (
        chat_stack(settings, tenants) as sdk,
        as_client(settings, tenants["alice"]) as alice_nc,
        as_client(settings, tenants["bob"]) as bob_nc,
    ):
        heard: dict[str, list[CompletionChunk]] = {"alice": [], "bob": []}

        def into(name: str) -> Any:
            async def take(msg: Msg) -> None:
                heard[name].append(CompletionChunk.model_validate_json(msg.data))

            return take

        chunks = subjects.COMPLETION_CHUNK.format(request_id="alice-turn")
        await alice_nc.subscribe(chunks, cb=into("alice"))
        await bob_nc.subscribe(subjects.COMPLETION_CHUNK.format(request_id=">"), cb=into("bob"))
        await alice_nc.flush()
        await bob_nc.flush()
        reply = await sdk["alice"].chat(
            "alice", None, "Stream it.", model=MODEL, request_id="alice-turn", stream=True
        )
        await wait_for(lambda: any(c.final for c in heard["alice"]), 10, "alice's final chunk")
        assert reply.status == "completed" and reply.message is not None
        said = "".join(c.delta for c in heard["alice"] if not c.final)
        assert said == reply.message.content
        # bob hears nothing of it, and may not send a request in alice's name
        forged = sdk["bob"].request("hi", model=MODEL, stream=True, sent_by="alice")
        with pytest.raises(CompletionError) as refused:
            await sdk["bob"].complete(forged)
        assert refused.value.failed.error_type == "forbidden"
        assert "sent_by" in refused.value.failed.message
        await bob_nc.flush()
        assert heard["bob"] == []


async def test_a_client_follows_and_stops_its_own_chat_turn_and_no_one_elses(
    config_file: Path, tenants: dict[str, Path]
) -> None:
    one_at_a_time = with_budgets(config_file, concurrency=1)  # so a second turn waits
    async with chat_stack(one_at_a_time, tenants) as sdk:
        alice, bob = sdk["alice"], sdk["bob"]
        started = await alice.chat(
            "alice", None, "Count slowly.", model="drip-40-60", request_id="slow-turn",
            stream=True, wait=False,
        )  # fmt: skip
        assert started.status == "pending"

        async def running() -> bool:
            return (await alice.status("slow-turn")).status == "running"

        await wait_for(running, 20, "alice to see her turn running")
        assert (await bob.status("slow-turn")).status == "unknown"
        assert (await bob.cancel("slow-turn")).result == "unknown"
        assert (await sdk["root"].status("slow-turn")).status == "running"  # an admin sees all
        await alice.chat("alice", None, "Next.", model=MODEL, request_id="next-turn", wait=False)

        async def queued() -> bool:  # once the outbox has published it
            return (await alice.status("next-turn")).status == "queued"

        await wait_for(queued, 20, "alice to see her next turn queued")
        assert (await bob.status("next-turn")).status == "unknown"
        assert (await alice.cancel("slow-turn")).result == "cancelled"

        async def failed() -> bool:
            view = await alice.conversations.get("alice", started.conversation_id)
            return any(f.request_id == "slow-turn" for f in view.failures)

        await wait_for(failed, 20, "the cancelled turn on alice's conversation")
        view = await alice.conversations.get("alice", started.conversation_id)
        [failure] = view.failures
        assert failure.error_type == "cancelled"
        assert (await alice.status("slow-turn")).status == "failed"
        assert (await bob.status("slow-turn")).status == "unknown"


async def test_prompts_change_only_with_admin_or_the_owning_teams_credentials(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with chat_stack(settings, tenants) as sdk:
        operator, bob, root = sdk["operator"], sdk["bob"], sdk["root"]
        await operator.prompts.create("house", "House", "Hi {{ name }}", labels=["production"])
        await operator.prompts.update("house", template="Hello {{ name }}")
        for call in (
            bob.prompts.update("house", template="PWNED {{ name }}"),
            bob.prompts.deactivate("house"),
            bob.prompts.label("house", "production", 2),
            bob.prompts.rollback("house", "production", 1),
            bob.prompts.activate("house"),
        ):
            refused = await refusal(call)
            assert refused.error_type == "forbidden" and "admin credentials" in refused.message
        house = await bob.prompts.get("house")  # reads stay open
        assert (house.active, house.version, house.team_id) == (True, 1, None)
        assert house.labels == {"latest": 2, "production": 1}
        assert len(await bob.prompts.history("house")) == 2
        rendered = await bob.prompts.render("house", {"name": "Bob"})
        assert rendered.messages[0].content == "Hi Bob"

        moved = await root.prompts.label("house", "production", 2)
        assert moved.labels["production"] == 2
        assert not (await root.prompts.deactivate("house")).active


async def test_a_teams_prompt_is_changed_by_its_team_and_no_other(
    settings: Settings, tenants: dict[str, Path]
) -> None:
    async with chat_stack(settings, tenants) as sdk:
        created = await sdk["alice"].prompts.create("red-notes", "Notes", "Note {{ x }}")
        assert created.team_id == "red"
        updated = await sdk["carol"].prompts.update("red-notes", template="Noted: {{ x }}")
        assert updated.version == 2
        refused = await refusal(sdk["bob"].prompts.deactivate("red-notes"))
        assert refused.error_type == "forbidden" and "team 'red'" in refused.message
        assert (await sdk["bob"].prompts.get("red-notes")).active
        assert not (await sdk["root"].prompts.deactivate("red-notes")).active


def received(request_id: str, conversation_id: str, user_id: str, text: str) -> CompletionReceived:
    return CompletionReceived(
        request_id=request_id, model=MODEL, provider="openai", content=text,
        usage=TokenUsage(prompt_tokens=5, completion_tokens=3), cost_usd=0.0, latency_ms=1.0,
        conversation_id=conversation_id, user_id=user_id,
    )  # fmt: skip


def test_the_recorder_records_an_outcome_only_on_its_turns_conversation() -> None:
    """No NATS: a client cannot publish an outcome (test_completion_attacks), and the recorder
    does not trust one either. An outcome naming another conversation that holds the same turn
    id (stored before turn ids were claimed), or another user, is left alone."""
    app = ConversationApplication()  # in memory
    limits = Limits(1_000_000, 1_048_576)

    def fit(model: str, messages: list[dict[str, str]], max_tokens: int | None) -> Fit:
        return Fit(messages)

    alice = str(app.start("alice", "Hers", model=MODEL).id)
    app.send("alice", alice, "secret", "turn-1", None, {}, fit, limits)
    legacy = app.start("bob", "His", model=MODEL)
    legacy._add_message("user", "secret", "turn-1", None)  # as stored before claims
    app.save(legacy)
    bob = str(legacy.id)

    assert app.record_outcomes([received("turn-1", bob, "bob", "alice's answer")]) == []
    assert app.record_outcomes([received("turn-1", alice, "mallory", "forged")]) == []
    assert app.conversation("alice", alice).pending == {"turn-1"}
    fresh = str(app.start("bob", "New", model=MODEL).id)
    with pytest.raises(RequestConflictError):
        app.send("bob", fresh, "secret", "turn-1", None, {}, fit, limits)

    [changed] = app.record_outcomes([received("turn-1", alice, "alice", "the answer")])
    assert str(changed.id) == alice and app.conversation("alice", alice).pending == set()
    assert [t.role for t in app.conversation("bob", bob).messages] == ["user"]
