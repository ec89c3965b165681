"""The Conversation aggregate and history trimming alone: no store, no NATS."""

import json
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application

from llmbus.services.conversation.domain.conversation import Conversation, Turn
from llmbus.services.conversation.domain.errors import ConversationError, ConversationNotFound
from llmbus.services.conversation.domain.history import trim_history, without_oldest


def new_events(conversation: Conversation) -> list[str]:
    return [type(e).__name__ for e in conversation.collect_events()]


def chat(**fields: Any) -> Conversation:
    base: dict[str, Any] = {"user_id": "alice", "title": "Trip to Lisbon"}
    return Conversation.start(**(base | fields))


def receive(conversation: Conversation, request_id: str, content: str | None = "Sure.") -> None:
    conversation.receive_completion(
        request_id, content, "gpt-4o-mini", prompt_tokens=12, completion_tokens=3,
        cost_usd=0.0005, finish_reason="stop",
    )  # fmt: skip


def test_starting_a_conversation_records_who_what_and_when() -> None:
    conversation = chat(title="  Trip to Lisbon  ", metadata={"channel": "web"}, model="gpt-4o")

    assert conversation.user_id == "alice"
    assert conversation.title == "Trip to Lisbon"
    assert conversation.metadata == {"channel": "web"}
    assert conversation.model == "gpt-4o"
    assert conversation.messages == []
    assert conversation.created_at == conversation.last_activity_at == conversation.created_on
    assert conversation.deleted is False
    assert new_events(conversation) == ["ConversationCreated"]


def test_a_system_message_given_at_start_is_the_first_message() -> None:
    conversation = chat(system="Answer in French.")

    assert new_events(conversation) == ["ConversationCreated", "MessageAdded"]
    assert conversation.history() == [{"role": "system", "content": "Answer in French."}]


def test_every_conversation_gets_its_own_id() -> None:
    assert chat().id != chat().id


@pytest.mark.parametrize("title", ["x", "t" * 200, "  " + "t" * 200 + "  "])
def test_titles_of_1_to_200_characters_are_accepted(title: str) -> None:
    assert chat(title=title).title == title.strip()


@pytest.mark.parametrize("title", ["", "   ", "t" * 201])
def test_a_title_outside_1_to_200_characters_is_refused(title: str) -> None:
    with pytest.raises(ConversationError, match="title must be 1-200 characters"):
        chat(title=title)


@pytest.mark.parametrize("metadata", [["a", "b"], "text", 3])
def test_metadata_must_be_a_json_object(metadata: Any) -> None:
    with pytest.raises(ConversationError, match="metadata must be a JSON object"):
        chat(metadata=metadata)


@pytest.mark.parametrize("metadata", [{"at": object()}, {"x": float("nan")}, {1: "a"}])
def test_metadata_must_serialise_to_json(metadata: Any) -> None:
    with pytest.raises(ConversationError, match="metadata"):
        chat(metadata=metadata)


def test_metadata_is_stored_as_the_json_a_reader_gets_back() -> None:
    assert chat(metadata={"tags": ("a", "b")}).metadata == {"tags": ["a", "b"]}
    assert chat().metadata == {}


def test_an_empty_user_id_is_refused() -> None:
    with pytest.raises(ConversationError, match="user_id must not be empty"):
        chat(user_id=" ")


def test_a_blank_system_message_is_refused_before_anything_is_created() -> None:
    with pytest.raises(ConversationError, match="content must not be empty"):
        chat(system="  ")


def test_messages_are_kept_in_order_with_their_time() -> None:
    conversation = chat(system="Be brief.")
    conversation.add_message("user", "Where should I eat?", request_id="r-1")
    receive(conversation, "r-1", "Try Time Out Market.")
    conversation.add_message("user", "And tomorrow?")

    assert [t.role for t in conversation.messages] == ["system", "user", "assistant", "user"]
    times = [t.at for t in conversation.messages]
    assert times == sorted(times)
    assert conversation.last_activity_at == times[-1]
    assert conversation.history() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where should I eat?"},
        {"role": "assistant", "content": "Try Time Out Market."},
        {"role": "user", "content": "And tomorrow?"},
    ]


@pytest.mark.parametrize("role", ["tool", "User", "", "bot"])
def test_only_user_assistant_and_system_messages_are_accepted(role: str) -> None:
    conversation = chat()
    conversation.collect_events()

    with pytest.raises(ConversationError, match="role must be one of user, assistant, system"):
        conversation.add_message(role, "hi")
    assert new_events(conversation) == []


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
def test_empty_or_whitespace_content_is_refused(content: str) -> None:
    conversation = chat()
    conversation.collect_events()

    with pytest.raises(ConversationError, match="message content must not be empty"):
        conversation.add_message("user", content)
    assert new_events(conversation) == []


def test_a_user_message_with_a_request_id_is_pending_until_its_answer_arrives() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")

    assert conversation.pending == {"r-1"}
    assert conversation.answer("r-1") is None

    receive(conversation, "r-1", "Hi!")

    assert conversation.pending == set()
    answer = conversation.answer("r-1")
    assert answer is not None
    assert answer.role == "assistant"
    assert answer.content == "Hi!"
    assert answer.model == "gpt-4o-mini"
    assert (answer.prompt_tokens, answer.completion_tokens) == (12, 3)
    assert answer.cost_usd == 0.0005
    assert answer.finish_reason == "stop"


def request(model: str = "gpt-4o", dropped: int = 0, **params: Any) -> dict[str, Any]:
    return {"model": model, "params": params, "dropped": dropped}


def test_a_turn_stores_the_model_params_and_trim_of_its_request_not_the_history() -> None:
    conversation = chat(system="Be brief.")
    conversation.add_message("user", "Hello", request_id="r-1", request=request())
    receive(conversation, "r-1", "Hi!")
    conversation.collect_events()
    sent = request(dropped=2, max_tokens=50)

    conversation.add_message("user", "Again", request_id="r-2", request=sent)

    (added,) = conversation.collect_events()
    assert type(added).__name__ == "MessageAdded"
    assert added.request == sent  # type: ignore[attr-defined]
    assert added.request_id == "r-2"  # type: ignore[attr-defined]
    # the messages it sends are the conversation's, less the turns its trim dropped
    assert conversation.sent_messages(2) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Again"},
    ]
    assert conversation.sent_messages(0) == conversation.history()


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        (request() | {"messages": [{"role": "user", "content": "Hello"}]}, "exactly model"),
        ({"model": "gpt-4o", "params": {}}, "exactly model, params, dropped"),
        (request(model=" "), "model must be a non-empty"),
        (request() | {"params": ["x"]}, "params must be a JSON object"),
        (request(dropped=-1), "dropped must be a non-negative integer"),
        (request() | {"dropped": True}, "dropped must be a non-negative integer"),
        (request(dropped=3), "drops 3 turns, but the history has only 2"),
        (request(stop=float("nan")), "JSON-serialisable"),
        (request() | {"stream": False}, "stream is true or left out"),
        (request() | {"sent_by": " "}, "sent_by is a client's name"),
        (request() | {"stream": True, "sent_by": 7}, "sent_by is a client's name"),
    ],
)
def test_a_turns_request_holds_only_what_the_history_cannot_tell(
    sent: dict[str, Any], error: str
) -> None:
    conversation = chat(system="Be brief.")
    conversation.add_message("user", "Hello", request_id="r-1")
    receive(conversation, "r-1", "Hi!")
    conversation.collect_events()

    with pytest.raises(ConversationError, match=error):
        conversation.add_message("user", "Again", request_id="r-2", request=sent)
    assert new_events(conversation) == []


def test_only_a_user_message_with_a_request_id_may_start_a_request() -> None:
    conversation = chat()
    with pytest.raises(ConversationError, match="only a user message with a request id"):
        conversation.add_message("user", "Hello", request=request())
    with pytest.raises(ConversationError, match="only a user message with a request id"):
        conversation.add_message("assistant", "Hello", request_id="r-1", request=request())


def test_a_turns_stored_event_does_not_grow_with_the_conversation() -> None:
    app: Application[Any] = Application()
    conversation = chat(system="Be brief.")
    for n in range(1, 31):
        conversation.add_message(
            "user", f"Question {n:03d}", request_id=f"r-{n:03d}", request=request(max_tokens=9)
        )
        receive(conversation, f"r-{n:03d}", f"Answer {n:03d}")
    app.save(conversation)

    stored = [
        e for e in app.recorder.select_events(conversation.id) if e.topic.endswith("MessageAdded")
    ]
    turns = stored[1:]  # after the system message
    assert len(turns) == 30
    sizes = [len(e.state) for e in turns]
    assert max(sizes) - min(sizes) <= 7  # a timestamp with no microseconds is 7 bytes shorter
    last = turns[-1].state.decode()
    assert "Question 030" in last
    assert not any(f"Question {n:03d}" in last or f"Answer {n:03d}" in last for n in range(1, 30))
    assert "Be brief." not in last


def test_a_turn_stored_with_its_whole_request_still_replays() -> None:
    """Turns stored before requests were kept compact carry the request, messages and all."""
    app: Application[Any] = Application()
    conversation = chat()
    whole = {
        "request_id": "r-1",
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hello"}],
        "params": {},
    }
    conversation._add_message("user", "Hello", "r-1", whole)  # what add_message stored then
    app.save(conversation)

    copy: Conversation = app.repository.get(conversation.id)
    assert copy.pending == {"r-1"} and copy.history() == [{"role": "user", "content": "Hello"}]
    *_, added = app.events.get(conversation.id)
    assert added.request == whole  # type: ignore[attr-defined]


def test_a_retried_send_with_the_same_request_id_adds_nothing() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")
    conversation.collect_events()

    conversation.add_message("user", "Hello", request_id="r-1")

    assert new_events(conversation) == []
    assert len(conversation.messages) == 1


def test_a_request_id_cannot_be_reused_for_another_message() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")

    with pytest.raises(ConversationError, match="request 'r-1' was already sent"):
        conversation.add_message("user", "Something else", request_id="r-1")


def test_recording_a_completion_twice_changes_nothing() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")
    receive(conversation, "r-1", "Hi!")
    conversation.collect_events()

    receive(conversation, "r-1", "Hi again!")
    conversation.fail_completion("r-1", "timeout", "too slow")

    assert new_events(conversation) == []
    assert [t.content for t in conversation.messages] == ["Hello", "Hi!"]
    assert conversation.failures == []


def test_a_failed_completion_is_recorded_once_and_clears_the_pending_request() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")

    conversation.fail_completion("r-1", "provider_error", "upstream 503")
    conversation.fail_completion("r-1", "provider_error", "upstream 503")
    receive(conversation, "r-1", "late")

    assert conversation.pending == set()
    assert len(conversation.failures) == 1
    failure = conversation.failure("r-1")
    assert failure is not None
    assert (failure["error_type"], failure["message"]) == ("provider_error", "upstream 503")
    assert [t.role for t in conversation.messages] == ["user"]
    assert conversation.failure("r-2") is None


def test_a_reply_kept_without_its_text_is_left_out_of_the_history() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")
    receive(conversation, "r-1", None)

    assert conversation.messages[-1].content is None
    assert conversation.messages[-1].completion_tokens == 3
    assert conversation.history() == [{"role": "user", "content": "Hello"}]


def test_totals_add_up_the_replies() -> None:
    conversation = chat()
    for n in (1, 2):
        conversation.add_message("user", f"Question {n}", request_id=f"r-{n}")
        receive(conversation, f"r-{n}")

    assert conversation.total_tokens == 30
    assert conversation.total_cost_usd == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt_tokens", -1), ("completion_tokens", True), ("cost_usd", -0.1)],
)
def test_a_completion_with_impossible_usage_is_refused(field: str, value: Any) -> None:
    conversation = chat()
    usage: dict[str, Any] = {"prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0}
    with pytest.raises(ConversationError, match=field):
        conversation.receive_completion(
            "r-1", "x", "m", finish_reason="stop", **(usage | {field: value})
        )


def test_a_trim_is_recorded_with_its_numbers() -> None:
    conversation = chat()
    conversation.record_trim("r-1", dropped=4, kept=3, context_window=8192)

    (trim,) = conversation.trims
    assert {k: trim[k] for k in ("request_id", "dropped", "kept", "context_window")} == {
        "request_id": "r-1",
        "dropped": 4,
        "kept": 3,
        "context_window": 8192,
    }
    assert trim["at"] == conversation.modified_on
    assert new_events(conversation)[-1] == "HistoryTrimmed"


def test_renaming_changes_the_title_and_refuses_a_bad_one() -> None:
    conversation = chat()
    conversation.rename("  Lisbon, day two ")
    conversation.rename("Lisbon, day two")

    assert conversation.title == "Lisbon, day two"
    assert new_events(conversation) == ["ConversationCreated", "ConversationRenamed"]
    with pytest.raises(ConversationError, match="title must be 1-200 characters"):
        conversation.rename("")


def test_the_owner_passes_the_ownership_check() -> None:
    chat(user_id="alice").check_owner("alice")


def test_another_user_a_deleted_and_a_missing_conversation_all_read_not_found() -> None:
    theirs = chat(user_id="bob")
    deleted = chat(user_id="alice")
    deleted.delete()
    missing_id = uuid4()

    with pytest.raises(ConversationNotFound) as other_owner:
        theirs.check_owner("alice")
    with pytest.raises(ConversationNotFound) as gone:
        deleted.check_owner("alice")
    missing = ConversationNotFound(missing_id)

    assert str(other_owner.value) == f"conversation {theirs.id} not found"
    assert str(gone.value) == f"conversation {deleted.id} not found"
    assert str(missing) == f"conversation {missing_id} not found"
    assert str(ConversationNotFound(f"conversation {missing_id} not found")) == str(missing)


def test_a_deleted_conversation_takes_no_more_messages_and_ignores_late_replies() -> None:
    conversation = chat()
    conversation.add_message("user", "Hello", request_id="r-1")
    conversation.delete()
    conversation.collect_events()

    with pytest.raises(ConversationNotFound):
        conversation.add_message("user", "Still there?")
    with pytest.raises(ConversationNotFound):
        conversation.rename("New")
    with pytest.raises(ConversationNotFound):
        conversation.delete()
    receive(conversation, "r-1")
    conversation.fail_completion("r-1", "timeout", "slow")

    assert new_events(conversation) == []
    assert conversation.deleted is True


def test_a_conversation_survives_a_round_trip_through_an_event_store() -> None:
    app: Application[Any] = Application()
    conversation = chat(metadata={"channel": "web", "n": 1}, model="gpt-4o", system="Be brief.")
    conversation.add_message("user", "Hello", request_id="r-1", request=request())
    conversation.record_trim("r-1", dropped=0, kept=2, context_window=128000)
    receive(conversation, "r-1", "Hi!")
    conversation.add_message("user", "Bye", request_id="r-2")
    conversation.fail_completion("r-2", "timeout", "slow")
    conversation.add_message("user", "Again", request_id="r-3")
    conversation.rename("Greetings")
    app.save(conversation)

    copy: Conversation = app.repository.get(conversation.id)

    assert copy.version == conversation.version == 9
    assert copy.title == "Greetings"
    assert copy.metadata == {"channel": "web", "n": 1}
    assert copy.messages == conversation.messages
    assert all(isinstance(t, Turn) for t in copy.messages)
    assert copy.pending == {"r-3"}
    assert copy.failures == conversation.failures
    assert copy.trims == conversation.trims
    assert copy.created_at == conversation.created_at
    assert copy.last_activity_at == conversation.last_activity_at
    assert copy.history() == conversation.history()
    # the outcome of r-1 is remembered, so a redelivered reply still changes nothing
    receive(copy, "r-1", "Hi!")
    assert copy.collect_events() == []


# trim_history


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_a_history_that_fits_is_kept_whole() -> None:
    history = turns(("system", "be brief"), ("user", "hello there"), ("assistant", "hi"))

    assert trim_history(history, words, limit=5) == (history, 0)


def test_trimming_drops_the_oldest_turns_but_keeps_system_messages_and_the_last_one() -> None:
    history = turns(
        ("system", "be brief"),
        ("user", "one one"),
        ("assistant", "two two"),
        ("user", "three three"),
        ("assistant", "four four"),
        ("user", "five five"),
    )

    kept, dropped = trim_history(history, words, limit=8)

    assert kept == turns(
        ("system", "be brief"),
        ("user", "three three"),
        ("assistant", "four four"),
        ("user", "five five"),
    )
    assert dropped == 2
    assert words(kept) == 8


def test_a_trimmed_history_does_not_open_on_an_assistant_turn() -> None:
    history = turns(
        ("system", "s"),
        ("user", "a a a a"),
        ("assistant", "b"),
        ("user", "c"),
    )

    kept, dropped = trim_history(history, words, limit=4)

    assert kept == turns(("system", "s"), ("user", "c"))
    assert dropped == 2


def test_system_messages_and_the_last_message_stay_even_when_they_do_not_fit() -> None:
    history = turns(("system", "a b c"), ("user", "d e"), ("user", "f g h i"))

    kept, dropped = trim_history(history, words, limit=2)

    assert kept == turns(("system", "a b c"), ("user", "f g h i"))
    assert dropped == 1


def test_what_trimming_keeps_is_told_by_how_many_turns_it_dropped() -> None:
    history = turns(
        ("system", "be brief"),
        ("user", "one one one"),
        ("assistant", "two"),
        ("user", "three three"),
        ("system", "now in French"),
        ("assistant", "four four four four"),
        ("user", "five"),
        ("assistant", "six six"),
        ("user", "seven seven seven"),
    )

    seen = set()
    for limit in range(words(history) + 2):
        kept, dropped = trim_history(history, words, limit)
        assert without_oldest(history, dropped) == kept
        seen.add(dropped)
    assert seen == {0, 2, 4, 6}  # a reply left first goes too; the last turn always stays


def test_without_oldest_keeps_every_system_message_and_the_order() -> None:
    history = turns(("system", "a"), ("user", "b"), ("system", "c"), ("assistant", "d"))

    assert without_oldest(history, 0) == history
    assert without_oldest(history, 1) == turns(("system", "a"), ("system", "c"), ("assistant", "d"))
    assert without_oldest(history, 2) == turns(("system", "a"), ("system", "c"))


def test_trimming_leaves_the_input_list_alone() -> None:
    history = turns(("user", "a b"), ("assistant", "c"), ("user", "d"))
    before = json.dumps(history)

    trim_history(history, words, limit=1)

    assert json.dumps(history) == before
    assert trim_history([], words, limit=0) == ([], 0)


def test_stored_events_keep_the_topics_of_the_module_conversations_were_first_stored_by() -> None:
    # stores written before the domain moved into domain/ must read back, and keep doing so
    app: Application[Any] = Application()
    conversation = chat(system="Be brief.")
    conversation.rename("Renamed")
    app.save(conversation)
    old = "llmbus.services.conversation.conversation:Conversation."
    topics = [n.topic for n in app.recorder.select_notifications(0, 10)]
    assert topics == [
        old + e for e in ("ConversationCreated", "MessageAdded", "ConversationRenamed")
    ]
    assert app.repository.get(conversation.id).title == "Renamed"


def test_a_conversation_started_by_a_first_turn_has_an_id_its_resend_finds_again() -> None:
    conversation_id = Conversation.first_turn_id("alice", "req-1")
    assert conversation_id == Conversation.first_turn_id("alice", "req-1")
    assert conversation_id not in {
        Conversation.first_turn_id("bob", "req-1"), Conversation.first_turn_id("alice", "req-2")
    }  # fmt: skip
    assert chat(conversation_id=conversation_id).id == conversation_id
