"""Provider keys, and in metadata-only mode message contents, reach no log, event or error."""

import json
import logging

import pytest

from llmbus.client import CompletionError
from llmbus.services.completion.application import CompletionApplication
from llmbus.shared import subjects
from llmbus.shared.eventstore import open_store
from llmbus.shared.settings import Settings
from support import pipeline, wait_for

SECRET = "my-card-4111-1111-1111-1111"
TEST_KEY = "sk-test-fake-key-never-logged-0123456789"  # set by the settings fixture


async def test_metadata_only_mode_keeps_contents_out_of_events_store_and_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    private = settings.model_copy(
        update={"completion": settings.completion.model_copy(update={"privacy": "metadata_only"})}
    )
    async with pipeline(private, with_usage=False) as (nc, events, client):
        received = await client.complete(f"remember {SECRET}", model="llmbus-sim/small")
        assert received.content  # the caller still gets the text, on its reply inbox
        await nc.jetstream().publish(
            subjects.COMPLETION_REQUESTED,
            json.dumps({"request_id": "bad-1", "model": "llmbus-sim/small", "secret": SECRET,
                        "messages": [{"role": "wizard", "content": SECRET}]}).encode(),
        )  # fmt: skip
        await events.wait_terminal(2)
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 1, what="usage")
        dead = await nc.jetstream().subscribe(
            "llmbus.deadletter.completion",
            stream=subjects.DEAD_LETTER_STREAM,
            ordered_consumer=True,
        )
        letter = await dead.next_msg(timeout=10)

    published = json.dumps(events.events)
    assert SECRET not in published and received.content not in published
    assert [e["content"] for e in events.on(subjects.COMPLETION_RECEIVED)] == [None]
    assert SECRET.encode() not in letter.data and json.loads(letter.data)["redacted"] is True
    store = open_store(CompletionApplication, private, "completion")
    stored = [n.state for n in store.recorder.select_notifications(1, 100)]
    store.close()
    assert stored and not any(SECRET.encode() in state for state in stored)
    assert SECRET not in caplog.text


async def test_a_provider_key_never_reaches_events_errors_or_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with pipeline(settings, with_usage=False) as (_, events, client):
        with pytest.raises(CompletionError) as failure:
            await client.complete("hello", model="fail-401")  # the fake echoes the key it got
        assert failure.value.failed.error_type == "authentication"
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 1, what="usage")
    assert TEST_KEY not in str(failure.value)
    assert TEST_KEY not in json.dumps(events.events)
    assert TEST_KEY not in caplog.text
