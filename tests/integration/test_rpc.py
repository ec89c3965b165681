"""The one request/reply layer, run in memory by FastStream's TestNatsBroker: a handler takes a
typed request and returns a typed reply, and whatever goes wrong comes back as one ErrorReply."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from faststream.nats import TestNatsBroker
from pydantic import BaseModel, Field

from llmbus.shared.contracts import ErrorReply, ReplyErrorType
from llmbus.shared.errors import InvalidRequestError, NotFoundError, StoreBusyError
from llmbus.shared.rpc import RpcRouter, SharedConnectionBroker
from support import wait_for

MAX_PAYLOAD = 4096


class Greet(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    times: int = 1


class Greeting(BaseModel):
    text: str


class Garden:
    """A service's handlers: the ones a test needs, each failing in its own way."""

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.gate = asyncio.Event()
        self.both_waiting = asyncio.Event()
        self.waiting = 0

    async def greet(self, request: Greet) -> Greeting:
        if request.name == "nobody":
            raise NotFoundError("nobody is not here")
        if request.name == "busy":
            raise StoreBusyError("the store kept changing; try again")
        if request.name == "rude":
            raise InvalidRequestError("be polite")
        if request.name == "bug":
            raise KeyError("sk-secret-in-the-traceback")
        return Greeting(text=" ".join([f"hello {request.name}"] * request.times))

    async def wait(self, request: Greet) -> Greeting:
        self.waiting += 1
        if self.waiting == 2:
            self.both_waiting.set()
        await self.gate.wait()
        return Greeting(text=request.name)

    async def hear(self, request: Greet) -> None:
        self.heard.append(request.name)


@pytest.fixture
async def garden() -> AsyncIterator[tuple[Garden, Any]]:
    handlers = Garden()
    broker = SharedConnectionBroker(None)
    broker.include_router(garden_router(handlers))
    async with TestNatsBroker(broker) as test_broker:
        yield handlers, test_broker


async def ask(broker: Any, subject: str, payload: bytes | dict[str, Any]) -> dict[str, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    reply = await broker.request(data, subject, timeout=5)
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def error_of(answer: dict[str, Any]) -> ErrorReply:
    return ErrorReply.model_validate(answer)


async def test_a_handler_answers_with_its_typed_reply(garden: tuple[Garden, Any]) -> None:
    _, broker = garden
    assert await ask(broker, "garden.greet", {"name": "ada", "times": 2}) == {
        "text": "hello ada hello ada"
    }


@pytest.mark.parametrize(
    ("payload", "error_type", "says"),
    [
        (b"{not json", "invalid_request", "Invalid JSON"),
        (b"[1, 2]", "invalid_request", "request: Input should be an object"),
        ({"times": 2}, "invalid_request", "name: Field required"),
        ({"name": "ada", "times": "often"}, "invalid_request", "times: Input should be"),
        ({"name": "x" * 21}, "too_large", "name: String should have at most 20 characters"),
        ({"name": "nobody"}, "not_found", "nobody is not here"),
        ({"name": "rude"}, "invalid_request", "be polite"),
        ({"name": "busy"}, "store_busy", "try again"),
    ],
)
async def test_every_error_comes_back_as_one_error_reply(
    garden: tuple[Garden, Any], payload: Any, error_type: str, says: str
) -> None:
    _, broker = garden
    error = error_of(await ask(broker, "garden.greet", payload))
    assert error.error_type == error_type
    assert says in error.message


async def test_an_invalid_request_is_described_without_echoing_its_input(
    garden: tuple[Garden, Any],
) -> None:
    _, broker = garden
    error = error_of(await ask(broker, "garden.greet", {"name": "ada", "times": "s3cr3t-value"}))
    assert error.error_type == ReplyErrorType.invalid_request
    assert "s3cr3t-value" not in error.message


async def test_an_unexpected_error_is_internal_and_its_text_stays_in_the_log(
    garden: tuple[Garden, Any], caplog: pytest.LogCaptureFixture
) -> None:
    _, broker = garden
    with caplog.at_level(logging.ERROR, logger="llmbus.rpc"):
        error = error_of(await ask(broker, "garden.greet", {"name": "bug"}))
    assert error.error_type == ReplyErrorType.internal
    assert error.message == "garden.greet failed inside the garden service; see its log"
    assert "sk-secret" not in error.message
    logged = [r for r in caplog.records if r.name == "llmbus.rpc"]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log


async def test_a_reply_larger_than_max_payload_becomes_too_large(
    garden: tuple[Garden, Any],
) -> None:
    _, broker = garden
    error = error_of(await ask(broker, "garden.greet", {"name": "ada", "times": 1000}))
    assert error.error_type == ReplyErrorType.too_large
    assert "more than fits the NATS server's max_payload of 4096 bytes" in error.message


async def until_greeted(client: nats.NATS, attempts: int = 100) -> None:
    """Another connection may hear of a new queue subscription a moment later."""
    for _ in range(attempts):
        try:
            await client.request("garden.greet", b'{"name": "ada"}', timeout=1)
            return
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.05)
    raise AssertionError("the garden never answered")


def garden_router(handlers: Garden, max_payload: int = MAX_PAYLOAD) -> RpcRouter:
    router = RpcRouter("garden", "garden", lambda: max_payload)
    router.answer("garden.greet", handlers.greet)
    router.answer("garden.wait", handlers.wait)
    router.listen("garden.hear", handlers.hear)
    router.answer("garden.hot.greet", handlers.greet, hot=True)
    router.answer("garden.hot.wait", handlers.wait, hot=True)
    router.listen("garden.hot.hear", handlers.hear, hot=True)
    return router


def as_compared(data: bytes) -> dict[str, Any]:
    """An answer without what differs by subject and time: the subject a message names, and
    when an ErrorReply was made."""
    answer: dict[str, Any] = json.loads(data.replace(b"garden.hot.", b"garden."))
    answer.pop("occurred_at", None)
    return answer


ASKED = [b"{not json", b"[1, 2]", b'{"times": 2}', b'{"name": "ada", "times": "often"}',
         b'{"name": "xxxxxxxxxxxxxxxxxxxxxxxxx"}', b'{"name": "nobody"}', b'{"name": "rude"}',
         b'{"name": "busy"}', b'{"name": "bug"}', b'{"name": "ada", "times": 1000}',
         b'{"name": "ada", "times": 2}']  # fmt: skip


async def test_on_real_nats_a_hot_subject_answers_exactly_as_the_others_do(
    nats_url: str, nats_login: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    handlers = Garden()
    nc, client = (
        await nats.connect(nats_url, **nats_login),
        await nats.connect(nats_url, **nats_login),
    )
    broker = SharedConnectionBroker(nc)
    broker.include_router(garden_router(handlers))  # a 4096-byte max_payload for replies
    await broker.start()
    try:
        await until_greeted(client)
        for payload in ASKED:
            with caplog.at_level(logging.ERROR, logger="llmbus.rpc"):
                usual = await client.request("garden.greet", payload, timeout=5)
                hot = await client.request("garden.hot.greet", payload, timeout=5)
            assert as_compared(hot.data) == as_compared(usual.data), payload
        with caplog.at_level(logging.WARNING, logger="llmbus.rpc"):
            for name in (b'"bo"', b"oops", b'"cy"', b'"di"'):
                await client.publish("garden.hot.hear", b'{"name": ' + name + b"}")
            await client.flush()
            await wait_for(lambda: len(handlers.heard) == 3, 5, "three names heard")
        assert handlers.heard == ["bo", "cy", "di"]  # in order; the bad one only logged
        assert any("ignoring a message on garden.hot.hear" in r.message for r in caplog.records)
        first = asyncio.create_task(client.request("garden.hot.wait", b'{"name": "a"}', timeout=10))
        second = asyncio.create_task(
            client.request("garden.hot.wait", b'{"name": "b"}', timeout=10)
        )
        await asyncio.wait_for(handlers.both_waiting.wait(), 5)  # each in a task of its own
        stopping = asyncio.create_task(broker.stop())  # waits for the hot requests in hand too
        handlers.gate.set()
        replies = [json.loads((await first).data), json.loads((await second).data)]
        assert replies == [{"text": "a"}, {"text": "b"}]
        await stopping
    finally:
        await client.close()
        await nc.close()


async def test_on_real_nats_a_waiting_request_holds_up_no_other_and_stopping_answers_it(
    nats_url: str, nats_login: dict[str, Any]
) -> None:
    handlers = Garden()
    nc, client = (
        await nats.connect(nats_url, **nats_login),
        await nats.connect(nats_url, **nats_login),
    )
    broker = SharedConnectionBroker(nc)
    broker.include_router(garden_router(handlers, nc.max_payload))
    await broker.start()
    try:
        await until_greeted(client)
        first = asyncio.create_task(client.request("garden.wait", b'{"name": "a"}', timeout=10))
        second = asyncio.create_task(client.request("garden.wait", b'{"name": "b"}', timeout=10))
        await asyncio.wait_for(handlers.both_waiting.wait(), 5)  # both in their handler at once
        stopping = asyncio.create_task(broker.stop())  # waits for the requests in hand
        handlers.gate.set()
        replies = [json.loads((await first).data), json.loads((await second).data)]
        assert replies == [{"text": "a"}, {"text": "b"}]
        await stopping
        assert nc.is_connected  # the connection is the service's: it stays open
    finally:
        await client.close()
        await nc.close()


async def test_a_fire_and_forget_message_is_heard_and_a_bad_one_only_logged(
    garden: tuple[Garden, Any], caplog: pytest.LogCaptureFixture
) -> None:
    handlers, broker = garden
    with caplog.at_level(logging.WARNING, logger="llmbus.rpc"):
        await broker.publish(b"{oops", "garden.hear")
        await broker.publish(json.dumps({"name": "ada"}).encode(), "garden.hear")
    assert handlers.heard == ["ada"]
    assert any("ignoring a message on garden.hear" in r.message for r in caplog.records)


def test_a_handler_must_take_one_typed_request() -> None:
    async def untyped(request):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="typed by a pydantic model"):
        RpcRouter("garden", "garden", lambda: MAX_PAYLOAD).answer("garden.x", untyped)
