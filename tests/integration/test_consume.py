"""shared.consuming.consume against a real nats-server: the linger that lets a consumer off the
request path (the usage service) take what arrives at low rates a batch at a time."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from llmbus.shared.consuming import Linger, consume
from llmbus.shared.natsserver import EmbeddedNats

STREAM, SUBJECT, DURABLE = "LINGER", "linger.events", "linger-reader"
# what a test waits for an event: far longer than a loaded machine takes, far shorter than
# the 60 s linger of the tests that show one is not waited out
WAIT_S = 10.0


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[NatsClient]:
    with EmbeddedNats(tmp_path / "nats") as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(name=STREAM, subjects=[SUBJECT])
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_wait=30))
        yield client
        await client.close()


def started(
    nc: NatsClient, stop: asyncio.Event, batch: int, linger: Linger
) -> tuple[asyncio.Task[None], asyncio.Queue[list[str]]]:
    batches: asyncio.Queue[list[str]] = asyncio.Queue()

    async def handle(msgs: list[Msg]) -> None:
        await asyncio.gather(*(msg.ack() for msg in msgs))
        await batches.put([msg.data.decode() for msg in msgs])

    loop = consume(nc.jetstream(), DURABLE, STREAM, handle, stop, batch, "tests", linger)
    return asyncio.create_task(loop), batches


async def next_batch(batches: asyncio.Queue[list[str]]) -> list[str]:
    return await asyncio.wait_for(batches.get(), WAIT_S)


async def test_what_arrives_while_a_consumer_lingers_comes_in_one_batch(nc: NatsClient) -> None:
    js, stop = nc.jetstream(), asyncio.Event()
    # 3 s: three local publishes land inside it, however busy the machine
    task, batches = started(nc, stop, batch=10, linger=Linger(seconds=3.0, below=5))
    await js.publish(SUBJECT, b"first")
    assert await next_batch(batches) == ["first"]  # alone: nothing to wait for
    for n in range(3):  # while the consumer lingers after its batch of one
        await js.publish(SUBJECT, f"next-{n}".encode())
    assert await next_batch(batches) == ["next-0", "next-1", "next-2"]
    stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_consumer_that_is_behind_never_lingers(nc: NatsClient) -> None:
    js, stop = nc.jetstream(), asyncio.Event()
    for n in range(7):
        await js.publish(SUBJECT, f"queued-{n}".encode())
    # batches of 3 are not below 3: each is followed by the next at once, within WAIT_S
    task, batches = started(nc, stop, batch=3, linger=Linger(seconds=60.0, below=3))
    assert [await next_batch(batches) for _ in range(3)] == [
        ["queued-0", "queued-1", "queued-2"], ["queued-3", "queued-4", "queued-5"], ["queued-6"]
    ]  # fmt: skip
    stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_stop_ends_the_linger_at_once(nc: NatsClient) -> None:
    js, stop = nc.jetstream(), asyncio.Event()
    task, batches = started(nc, stop, batch=10, linger=Linger(seconds=60.0, below=5))
    await js.publish(SUBJECT, b"only")
    assert await next_batch(batches) == ["only"]
    stop.set()  # while it lingers
    await asyncio.wait_for(task, WAIT_S)
