"""Poison: no outbox entry and no event wedges a relay or a consumer.

What cannot be published (over max_payload, refused by JetStream, a stored event that cannot be
made into a message) or applied (beyond what the usage store and projection hold, a conversation
this version cannot read) is parked on llmbus.deadletter.<service> with its reason, and what
follows goes on, across restarts. A NATS that is merely down is waited out, never parked.

Everything runs against a real nats-server whose max_payload is small enough to reach; events are
sent from a raw NATS client, and entries too large to have passed today's intake are written to
the stores directly, as a version without that check (or another process) would have.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import DataError, OperationalError, StoredEvent
from eventsourcing.utils import TopicError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    MaxPayloadError,
    NoRespondersError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.errors import (
    BadRequestError,
    NoStreamResponseError,
    ServerError,
    ServiceUnavailableError,
)

from llmbus.services.completion.application import CompletionApplication
from llmbus.services.completion.outbox import route as completion_route
from llmbus.services.conversation.application import ConversationApplication
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.services.usage.application import UsageApplication
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import bus, subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts import CompletionFailed, CompletionReceived, UsageRecorded
from llmbus.shared.deadletter import caused_by_entry, error_type, park
from llmbus.shared.errors import NotReachableError
from llmbus.shared.eventstore import open_store
from llmbus.shared.natsserver import EmbeddedNats
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.settings import Settings
from support import (
    connected,
    llmbus_cli,
    pipeline,
    running,
    wait_for,
    watching_events,
    with_budgets,
)

MAX_PAYLOAD = 8192
# 4 KB as UTF-8, as a client may send it; 12 KB as the \ud83d\ude00 escapes json.dumps writes
WIDE = "\U0001f600" * 1000
TYPE, ERROR, ORIGINAL, MSG_ID = (
    subjects.ERROR_TYPE_HEADER,
    subjects.ERROR_HEADER,
    subjects.ORIGINAL_SUBJECT_HEADER,
    subjects.MSG_ID_HEADER,
)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    config = tmp_path / "nats.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    with EmbeddedNats(tmp_path / "nats", extra_args=["-c", str(config)]) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    """Every test here runs on the small-max_payload server (overrides conftest's)."""
    return nats_server.url


@contextlib.asynccontextmanager
async def watching_dead_letters(nc: NatsClient) -> AsyncIterator[list[Msg]]:
    letters: list[Msg] = []

    async def collect(msg: Msg) -> None:
        letters.append(msg)

    sub = await nc.jetstream().subscribe(
        "llmbus.deadletter.>",
        stream=subjects.DEAD_LETTER_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        cb=collect,
    )
    try:
        yield letters
    finally:
        await sub.unsubscribe()


async def dead_letter_count(nc: NatsClient) -> int:
    return (await nc.jetstream().stream_info(subjects.DEAD_LETTER_STREAM)).state.messages


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def headers(letter: Msg) -> dict[str, str]:
    return letter.headers or {}


# Usage: forged events


def usage(usage_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "usage_id": usage_id, "request_id": f"req-{usage_id}", "provider": "openai",
        "model": "fake-gpt", "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
        "cost_usd": 0.25, "latency_ms": 12.0, "status": "ok", "user_id": "ann",
    } | fields  # fmt: skip


async def totals(nc: NatsClient) -> dict[str, Any] | None:
    """The usage service's totals, asked on llmbus.usage.query; None while it is not answering."""
    try:
        reply = await nc.request(subjects.USAGE_QUERY, b"{}", timeout=5)
    except Exception:
        return None
    rows = json.loads(reply.data).get("rows")
    return rows[0] if rows else None


async def usage_answers(nc: NatsClient) -> bool:
    return await totals(nc) is not None


async def wait_for_totals(nc: NatsClient, requests: int) -> dict[str, Any]:
    async def projected() -> bool:
        answer = await totals(nc)
        return answer is not None and answer["requests"] == requests

    await wait_for(projected, 60, f"{requests} usage events projected")
    answer = await totals(nc)
    assert answer is not None
    return answer


async def test_forged_usage_events_are_parked_and_the_valid_ones_behind_them_recorded(
    settings: Settings,
) -> None:
    forged = {
        "forged-cost": usage("forged-cost", cost_usd=1e9),  # over DuckDB's DECIMAL(18,10)
        "forged-tokens": usage("forged-tokens", prompt_tokens=10**15, total_tokens=10**15),
        "forged-negative": usage("forged-negative", completion_tokens=-5),
    }
    valid = [usage(f"valid-{i}") for i in range(3)]
    async with connected(settings) as nc, watching_dead_letters(nc) as letters:
        async with running(serve_usage, settings):
            js = nc.jetstream()
            for body in [*forged.values(), *valid]:
                await js.publish(subjects.USAGE_RECORDED, dumps(body))

            recorded = await wait_for_totals(nc, 3)
            assert recorded["cost_usd"] == pytest.approx(0.75)
            await wait_for(lambda: len(letters) == 3, 30, "the forged events parked")
            parked = {json.loads(letter.data)["usage_id"]: letter for letter in letters}
            assert parked.keys() == forged.keys()
            for usage_id, letter in parked.items():
                assert letter.subject == "llmbus.deadletter.usage"
                assert letter.data == dumps(forged[usage_id])  # as sent, to be looked at
                assert headers(letter)[TYPE] == "unrecordable"
                assert headers(letter)[ORIGINAL] == subjects.USAGE_RECORDED
            assert "cost_usd" in headers(parked["forged-cost"])[ERROR]
            assert "prompt_tokens" in headers(parked["forged-tokens"])[ERROR]
            assert "completion_tokens" in headers(parked["forged-negative"])[ERROR]
            # still serving budgets, and settling nothing of the forged cost
            status = await nc.request(subjects.BUDGET_STATUS, b"{}", timeout=5)
            assert json.loads(status.data) == []

        rebuilt = await asyncio.to_thread(llmbus_cli, "projections", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "from 3 usage events" in rebuilt.stdout

        async with running(serve_usage, settings):
            assert await wait_for_totals(nc, 3) == recorded
            await js.publish(subjects.USAGE_RECORDED, dumps(usage("after-restart")))
            await wait_for_totals(nc, 4)
        assert await dead_letter_count(nc) == 3


async def test_a_bad_usage_event_stored_before_the_checks_is_skipped_and_parked(
    settings: Settings,
) -> None:
    """A store written before usage was bounds-checked: the projection skips (and parks) the
    event it cannot hold, at start and in a rebuild, and projects the rest."""
    app = open_store(UsageApplication, settings, "usage")
    try:
        app.record([
            UsageRecorded.model_validate(usage("stored-forged", cost_usd=1e9)),
            UsageRecorded.model_validate(usage("stored-ok")),
        ])  # fmt: skip
    finally:
        app.close()

    async with connected(settings) as nc, watching_dead_letters(nc) as letters:
        async with running(serve_usage, settings):
            await wait_for_totals(nc, 1)
            await nc.jetstream().publish(subjects.USAGE_RECORDED, dumps(usage("new-ok")))
            assert (await wait_for_totals(nc, 2))["cost_usd"] == pytest.approx(0.5)
            await wait_for(lambda: len(letters) == 1, 30, "the stored event parked")
            (letter,) = letters
            assert json.loads(letter.data)["usage_id"] == "stored-forged"
            assert headers(letter)[TYPE] == "unrecordable"
            assert "cost_usd" in headers(letter)[ERROR]

        rebuilt = await asyncio.to_thread(llmbus_cli, "projections", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "from 2 usage events" in rebuilt.stdout
        assert "skipped 1" in rebuilt.stderr and "stored-forged" in rebuilt.stderr

        async with running(serve_usage, settings):
            assert (await wait_for_totals(nc, 2))["cost_usd"] == pytest.approx(0.5)
        assert await dead_letter_count(nc) == 1  # parked once: projected past, it is not met again


# Relays: entries that cannot be published


def received(request_id: str, content: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A CompletionReceived and its UsageRecorded, as a worker stores them."""
    event = CompletionReceived(
        request_id=request_id, model="fake-gpt", provider="openai", content=content,
        usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        cost_usd=0.001, latency_ms=5.0,
    )  # fmt: skip
    return event.model_dump(mode="json"), usage(f"{request_id}:1", request_id=request_id)


def failed(request_id: str) -> dict[str, Any]:
    event = CompletionFailed(
        request_id=request_id, error_type="internal", message="it broke", retryable=False
    )
    return event.model_dump(mode="json")


def store_received(settings: Settings, request_id: str, content: str) -> None:
    app = open_store(CompletionApplication, settings, "completion")
    try:
        event, call = received(request_id, content)
        app.record_received(request_id, {"request_id": request_id}, event, call)
    finally:
        app.close()


def chat_request(request_id: str) -> bytes:
    body = {"request_id": request_id, "model": "fake-gpt", "messages": [
        {"role": "user", "content": "Still there?"}
    ]}  # fmt: skip
    return json.dumps(body).encode()


async def test_an_outcome_over_max_payload_is_parked_and_the_completion_relay_goes_on(
    settings: Settings,
) -> None:
    store_received(settings, "wide-1", WIDE)  # stored; 12 KB once encoded

    async with (
        connected(settings) as raw,
        watching_dead_letters(raw) as letters,
        pipeline(settings) as (_, events, _client),
    ):
        await raw.jetstream().publish(subjects.COMPLETION_REQUESTED, chat_request("after-1"))
        await wait_for(
            lambda: any(e["request_id"] == "after-1" for e in events.terminal()),
            60, "the request after it to be published",
        )  # fmt: skip
        # the wide outcome's own UsageRecorded fits: published, and recorded
        await wait_for(
            lambda: any(e["usage_id"] == "wide-1:1" for e in events.on(subjects.USAGE_RECORDED)),
            what="the wide outcome's usage",
        )  # fmt: skip
        await wait_for(lambda: len(letters) == 1, 30, "the wide outcome parked")
        (letter,) = letters
        assert letter.subject == "llmbus.deadletter.completion"
        assert headers(letter)[TYPE] == "too_large"
        assert headers(letter)[ORIGINAL] == subjects.COMPLETION_RECEIVED
        assert headers(letter)[MSG_ID] == "dlq:completion:wide-1"
        assert f"max_payload of {MAX_PAYLOAD}" in headers(letter)[ERROR]
        stub = json.loads(letter.data)  # what it was, not what it said
        assert stub["msg_id"] == "completion:wide-1" and stub["bytes"] > MAX_PAYLOAD
        assert "\\ud83d" not in letter.data.decode() and WIDE[:10] not in letter.data.decode()
        assert not any(e["request_id"] == "wide-1" for e in events.terminal())


async def test_a_message_jetstream_refuses_is_parked_though_nats_py_never_acks_it(
    settings: Settings,
) -> None:
    """Under max_payload but over the stream's max_msg_size: JetStream answers with an error,
    which nats-py's publish_async never hands back; published alone, it is refused and parked."""
    store_received(settings, "long-1", "x" * 5000)
    app = open_store(CompletionApplication, settings, "completion")
    async with connected(settings) as nc, watching_dead_letters(nc) as letters:
        js = nc.jetstream()
        config = (await js.stream_info(subjects.EVENTS_STREAM)).config
        config.max_msg_size = 4096
        await js.update_stream(config)
        event, call = received("next-1", "short")
        await asyncio.to_thread(app.record_received, "next-1", {}, event, call)
        relay = OutboxRelay(
            app, js, completion_route, service="completion", name="completion-outbox",
            ack_timeout_s=0.5,
        )  # fmt: skip
        await asyncio.wait_for(relay.drain(), 60)
        app.close()

        assert (relay.published, relay.parked) == (3, 1)  # two UsageRecorded and next-1
        await wait_for(lambda: len(letters) == 1, 30, "the refused outcome parked")
        (letter,) = letters
        assert headers(letter)[TYPE] == "too_large"
        assert "10054" in headers(letter)[ERROR]
        assert json.loads(letter.data)["request_id"] == "long-1"  # it fits: kept whole
        last = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.COMPLETION_RECEIVED)
        assert json.loads(last.data or b"{}")["request_id"] == "next-1"


async def test_a_budget_event_over_max_payload_is_parked_and_the_usage_relay_goes_on(
    settings: Settings, config_file: Path
) -> None:
    wide_scope = {"name": "wide", "scope": {"user": WIDE}, "window": "lifetime",
                  "limit_usd": 1, "mode": "hard"}  # fmt: skip
    narrow = {"name": "narrow", "scope": {"user": "bo"}, "window": "lifetime",
              "limit_usd": 1, "mode": "hard"}  # fmt: skip
    settings = with_budgets(config_file, wide_scope, narrow)

    async def refused(nc: NatsClient, user: str, request_id: str) -> None:
        ask = {"request_id": request_id, "user": user, "amount_usd": "5", "lease_s": 30}
        reply = await nc.request(subjects.BUDGET_RESERVE, dumps(ask), timeout=10)
        assert json.loads(reply.data)["admitted"] is False

    def exceeded(events: Any, request_id: str) -> bool:
        return any(e["request_id"] == request_id for e in events.on(subjects.BUDGET_EXCEEDED))

    async with (
        connected(settings) as nc,
        watching_dead_letters(nc) as letters,
        watching_events(nc) as events,
    ):
        async with running(serve_usage, settings):
            # (not budget status: its reply, with the wide scope, would not fit max_payload)
            await wait_for(lambda: usage_answers(nc), 30, "the usage service")
            await refused(nc, WIDE, "wide-1")  # its BudgetExceeded: 12 KB once encoded
            await refused(nc, "bo", "narrow-1")
            await wait_for(lambda: exceeded(events, "narrow-1"), 30, "the event after it")
            await wait_for(lambda: len(letters) == 1, 30, "the wide event parked")
            (letter,) = letters
            assert letter.subject == "llmbus.deadletter.usage"
            assert headers(letter)[TYPE] == "too_large"
            assert headers(letter)[ORIGINAL] == subjects.BUDGET_EXCEEDED
            assert json.loads(letter.data)["msg_id"].startswith("budget-exceeded:")

        async with running(serve_usage, settings):
            await wait_for(lambda: usage_answers(nc), 30, "the usage service")
            await refused(nc, "bo", "narrow-2")
            await wait_for(lambda: exceeded(events, "narrow-2"), 30, "an event after a restart")
        assert not exceeded(events, "wide-1")
        assert await dead_letter_count(nc) == 1


# Conversations


async def chat(nc: NatsClient, user: str, content: str, wait: bool = True) -> dict[str, Any]:
    created = await nc.request(
        subjects.CONVERSATION_CREATE, dumps({"user_id": user, "title": "t", "model": "fake-gpt"})
    )
    conversation_id = json.loads(created.data)["conversation_id"]
    send = {"user_id": user, "conversation_id": conversation_id, "content": content, "wait": wait}
    reply = await nc.request(subjects.CONVERSATION_SEND, dumps(send), timeout=60)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def store_turns(settings: Settings) -> str:
    """Two chat turns stored as no send through today's intake could: one whose request is
    12 KB once encoded, and one stored by a version whose turns cannot be rebuilt here (the
    id of its conversation)."""
    app = open_store(ConversationApplication, settings, "conversation")
    try:
        wide = app.start("amy", "Wide", model="fake-gpt")
        wide.add_message("user", WIDE, "wide-turn", {"model": "fake-gpt", "params": {},
                                                     "dropped": 0})  # fmt: skip
        odd = app.start("amy", "From elsewhere", model="fake-gpt")
        odd._add_message("user", "hello", "odd-turn", {"model": "fake-gpt", "params": {}})
        app.save(wide, odd)
    finally:
        app.close()
    return str(odd.id)


async def test_a_chat_turn_that_cannot_be_published_is_parked_and_other_chats_go_on(
    settings: Settings,
) -> None:
    odd_id = store_turns(settings)
    async with connected(settings) as nc, watching_dead_letters(nc) as letters:
        async with pipeline(settings, with_usage=False), running(serve_conversation, settings):
            await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversations")
            assert (await chat(nc, "bo", "Hello?"))["status"] == "completed"
            await wait_for(lambda: len(letters) == 2, 30, "both turns parked")
            by_type = {headers(letter)[TYPE]: letter for letter in letters}
            assert by_type.keys() == {"too_large", "unroutable"}

            too_large = by_type["too_large"]
            assert too_large.subject == "llmbus.deadletter.conversation"
            assert headers(too_large)[ORIGINAL] == subjects.COMPLETION_REQUESTED
            assert headers(too_large)[MSG_ID] == "dlq:conversation:wide-turn"
            assert json.loads(too_large.data)["bytes"] > MAX_PAYLOAD
            assert WIDE[:10] not in too_large.data.decode()

            unroutable = by_type["unroutable"]
            assert "KeyError" in headers(unroutable)[ERROR]
            assert ORIGINAL not in headers(unroutable)  # it never became a message
            assert json.loads(unroutable.data)["originator_id"] == odd_id

        async with pipeline(settings, with_usage=False), running(serve_conversation, settings):
            await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversations")
            assert (await chat(nc, "cy", "Hello after a restart?"))["status"] == "completed"
        assert await dead_letter_count(nc) == 2


async def test_an_outcome_the_conversation_cannot_take_is_parked_and_others_are_recorded(
    settings: Settings,
) -> None:
    """An outcome for a conversation this version cannot read (an event stored by a newer one)
    and an invalid outcome: both parked, and other users' chats recorded."""
    async with connected(settings) as nc, watching_dead_letters(nc) as letters:
        async with running(serve_conversation, settings):
            await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversations")
            pending = await chat(nc, "amy", "Are you there?", wait=False)  # no worker yet
            assert pending["status"] == "pending"
            app = open_store(ConversationApplication, settings, "conversation")
            app.recorder.insert_events([StoredEvent(
                originator_id=UUID(pending["conversation_id"]), originator_version=3,
                topic="llmbus.services.conversation.conversation:Conversation.FromANewerVersion",
                state=b"{}",
            )])  # fmt: skip
            app.close()
            await nc.jetstream().publish(subjects.COMPLETION_RECEIVED, b'{"request_id": "x"}')

            async with pipeline(settings, with_usage=False):
                assert (await chat(nc, "bo", "Hello?"))["status"] == "completed"
                await wait_for(lambda: len(letters) == 3, 60, "three dead letters")

    by_type = {headers(letter)[TYPE]: letter for letter in letters}
    assert by_type.keys() == {"invalid_event", "unrecordable", "unroutable"}
    unrecordable = by_type["unrecordable"]
    assert headers(unrecordable)[ORIGINAL] == subjects.COMPLETION_RECEIVED
    assert json.loads(unrecordable.data)["request_id"] == pending["request_id"]
    assert "TopicError" in headers(unrecordable)[ERROR]
    assert by_type["invalid_event"].data == b'{"request_id": "x"}'
    # the relay cannot read the newer event either: parked, not published
    assert "TopicError" in headers(by_type["unroutable"])[ERROR]


# What is parked, and why; NATS itself failing is not the entry's fault


@pytest.mark.parametrize(
    ("error", "entry"),
    [
        (MaxPayloadError(), True),
        (BadRequestError(code=400, err_code=10054, description="message size exceeds"), True),
        (BadSubjectError(), True),
        (ValueError("turn is not the newest"), True),
        (KeyError("dropped"), True),
        (DataError("invalid byte sequence"), True),
        (TopicError("no such event"), True),
        (NatsTimeoutError(), False),
        (TimeoutError(), False),
        (NoRespondersError(), False),
        (NoStreamResponseError(), False),
        (ServiceUnavailableError(code=503, description="JetStream not ready"), False),
        (ServerError(code=500, description="storage failed"), False),
        (ConnectionClosedError(), False),
        (OutboundBufferLimitError(), False),
        (NotReachableError("not connected to NATS"), False),
        (OperationalError("connection refused"), False),
        (ConnectionResetError(), False),
        (RuntimeError("budgets kept changing under us"), False),
    ],
)
def test_only_an_entrys_own_faults_park_it(error: Exception, entry: bool) -> None:
    assert caused_by_entry(error) is entry


def test_a_too_large_refusal_is_told_from_other_refusals() -> None:
    assert error_type(MaxPayloadError()) == "too_large"
    assert error_type(BadRequestError(code=400, err_code=10054)) == "too_large"
    assert error_type(BadRequestError(code=400, err_code=10165)) == "unpublishable"


async def test_a_dead_letter_fits_max_payload_whatever_it_parks(settings: Settings) -> None:
    """Headers count against max_payload (over it, the server drops the connection): a dead
    letter swaps a payload too large for a stub, and keeps its headers short."""
    async with connected(settings) as nc, watching_dead_letters(nc) as letters:
        js = nc.jetstream()
        original = b"x" * (MAX_PAYLOAD - 100)  # fits alone, not with the dead letter's headers
        await park(
            js, "test", original, "line one\nline two " + "why " * 500, "too_large",
            subjects.COMPLETION_RECEIVED, "dlq:" + "long-id-" * 200, about={"request_id": "r1"},
        )  # fmt: skip
        await park(js, "test", b'{"small": true}', "bad", "unpublishable", None, "dlq:small")
        await wait_for(lambda: len(letters) == 2, 30, "both dead letters")
        assert nc.is_connected
        large, small = letters
        assert json.loads(large.data) == {
            "subject": subjects.COMPLETION_RECEIVED, "bytes": len(original), "request_id": "r1",
            "reason": headers(large)[ERROR],
        }  # fmt: skip
        assert len(headers(large)[ERROR]) <= 300 and "\n" not in headers(large)[ERROR]
        assert len(headers(large)[MSG_ID]) < 200 and "sha256:" in headers(large)[MSG_ID]
        assert small.data == b'{"small": true}' and ORIGINAL not in headers(small)


async def test_the_relay_waits_out_a_nats_outage_and_parks_nothing(
    settings: Settings, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    app = open_store(CompletionApplication, settings, "completion")
    nc = await bus.connect(settings, "test-relay")  # reconnects, as the services' do
    relay = OutboxRelay(
        app, nc.jetstream(), completion_route, service="completion", name="completion-outbox",
        on_loop=True, ack_timeout_s=1.0,
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="llmbus.outbox")
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    restarted: EmbeddedNats | None = None
    try:
        app.record_failed("before-1", {}, failed("before-1"))
        relay.poke()
        await wait_for(lambda: relay.published == 1, 30, "the first event published")

        nats_server.stop()
        app.record_failed("during-1", {}, failed("during-1"))
        relay.poke()
        await wait_for(lambda: "retrying" in caplog.text, 30, "the relay to fail and retry")
        port = int(nats_server.url.rsplit(":", 1)[1])
        restarted = EmbeddedNats(nats_server.data_dir, port=port, extra_args=nats_server.extra_args)
        restarted.start()
        await wait_for(lambda: relay.published == 2, 60, "the event stored while NATS was down")
        assert relay.parked == 0
        assert await dead_letter_count(nc) == 0
        last = await nc.jetstream().get_last_msg(subjects.EVENTS_STREAM, subjects.COMPLETION_FAILED)
        assert json.loads(last.data or b"{}")["request_id"] == "during-1"
    finally:
        stop.set()
        relay.poke()
        await asyncio.wait_for(relaying, 30)
        await nc.close()
        app.close()
        if restarted is not None:
            restarted.stop()
