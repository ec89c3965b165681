"""The one way llmbus connects to NATS and provisions its JetStream streams and consumers."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from llmbus.shared import subjects
from llmbus.shared.errors import NotReachableError
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.bus")

NATS_URL_FILE = "nats.url"
DAY_S = 86_400.0


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.REQUESTS_STREAM,
            subjects=[subjects.COMPLETION_REQUESTED],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=[
                subjects.COMPLETION_RECEIVED,
                subjects.COMPLETION_FAILED,
                subjects.USAGE_RECORDED,
                subjects.BUDGET_THRESHOLD_REACHED,
                subjects.BUDGET_EXCEEDED,
                subjects.PROMPT_EVENTS_ALL,
            ],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=90 * DAY_S,
            # outbox relays republish after a crash; a wide window lets JetStream drop the repeats.
            duplicate_window=600.0,
            num_replicas=replicas,
        ),
        # JetStream announces a request it stopped redelivering on core NATS only; keeping the
        # announcement lets a worker that starts later still end that request.
        StreamConfig(
            name=subjects.ADVISORIES_STREAM,
            subjects=[subjects.MAX_DELIVERIES_ADVISORY],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.DEAD_LETTER_STREAM,
            subjects=["llmbus.deadletter.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * DAY_S,
            num_replicas=replicas,
        ),
    ]


def consumer_configs(settings: Settings) -> list[tuple[str, ConsumerConfig]]:
    completion_workers = ConsumerConfig(
        durable_name=subjects.COMPLETION_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.completion.ack_wait_s,
        max_deliver=settings.completion.max_deliver,
        max_ack_pending=20_000,
        filter_subject=subjects.COMPLETION_REQUESTED,
    )
    gave_up = ConsumerConfig(
        durable_name=subjects.GAVE_UP_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
    )
    usage_recorder = ConsumerConfig(
        durable_name=subjects.USAGE_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30.0,
        max_ack_pending=20_000,
        filter_subject=subjects.USAGE_RECORDED,
    )
    # the outcomes of chat turns, recorded on their conversations
    conversation_recorder = ConsumerConfig(
        durable_name=subjects.CONVERSATION_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30.0,
        max_ack_pending=20_000,
        filter_subjects=[subjects.COMPLETION_RECEIVED, subjects.COMPLETION_FAILED],
    )
    return [
        (subjects.REQUESTS_STREAM, completion_workers),
        (subjects.ADVISORIES_STREAM, gave_up),
        (subjects.EVENTS_STREAM, usage_recorder),
        (subjects.EVENTS_STREAM, conversation_recorder),
    ]


def state_nats_url(settings: Settings) -> str | None:
    path = settings.state_dir / NATS_URL_FILE
    return path.read_text().strip() if path.is_file() else None


def resolve_nats_url(settings: Settings) -> str:
    url = settings.nats_url or state_nats_url(settings)
    if not url:
        raise NotReachableError(
            "no NATS server: set NATS_URL, or start the embedded stack with `llmbus up` "
            f"(it writes its address to {settings.state_dir / NATS_URL_FILE})"
        )
    return url


async def connect(settings: Settings, name: str, url: str | None = None) -> NatsClient:
    url = url or resolve_nats_url(settings)

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    try:
        return await nats.connect(
            [server.strip() for server in url.split(",")],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
        )
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        raise NotReachableError(f"cannot reach NATS at {url}: {exc}") from None


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the streams and durable consumers; safe to run from every process."""
    for config in stream_configs(settings.stream_replicas):
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            await js.update_stream(config=config)
    for stream, consumer in consumer_configs(settings):
        await js.add_consumer(stream, config=consumer)


def write_state_nats_url(state_dir: Path, url: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / NATS_URL_FILE).write_text(url + "\n")


async def consume(
    js: JetStreamContext,
    durable: str,
    stream: str,
    handle: Callable[[list[Msg]], Awaitable[None]],
    stop: asyncio.Event,
    batch: int,
    what: str,
) -> None:
    """Fetch batches from a durable pull consumer until `stop`. `handle` acks what it stored; a
    batch it fails on stays unacked, and JetStream redelivers it after a pause."""
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch=batch, timeout=0.5)
            except (NatsTimeoutError, TimeoutError):
                continue
            try:
                await handle(msgs)
            except Exception:
                log.exception("handling %d %s failed; they will be redelivered", len(msgs), what)
                await asyncio.sleep(1.0)
    finally:
        # a pull subscription with a fetch outstanding would hold up the connection's drain
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
