"""The one way llmbus connects to NATS and provisions its JetStream streams and consumers."""

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
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
from llmbus.shared.auth.directory import provision_bucket
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.errors import ConfigError, ForbiddenError, NotReachableError
from llmbus.shared.failover import Backoff, ConnectionLog, describe, is_transient
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.bus")

NATS_URL_FILE = "nats.url"
DAY_S = 86_400.0
# how long a starting service waits for JetStream (a cluster electing its leaders, say)
PROVISION_PATIENCE_S = 60.0


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.REQUESTS_STREAM,
            # a client's requests arrive under its name (shared.auth.config)
            subjects=[
                subjects.COMPLETION_REQUESTED,
                subjects.from_client(subjects.COMPLETION_REQUESTED),
            ],
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


def resolve_creds(settings: Settings) -> Path | None:
    """NATS_CREDS if set; else the operator's, where `llmbus up` made them; else none (a server
    without authentication)."""
    if settings.nats_creds is not None:
        return settings.nats_creds
    operator = AuthFiles.of(settings.state_dir).operator
    return operator if operator.is_file() else None


def credential_options(creds: Path | None, tls_ca: Path | None = None) -> dict[str, Any]:
    """nats-py's options for a user nkey seed or a .creds file (JWT and seed), and a CA."""
    options: dict[str, Any] = {}
    if creds is not None:
        try:
            text = creds.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read NATS credentials {creds}: {exc.strerror}") from None
        key = "user_credentials" if "BEGIN NATS USER JWT" in text else "nkeys_seed"
        options[key] = str(creds)
    if tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(tls_ca))
    return options


async def connect(
    settings: Settings, name: str, url: str | None = None, creds: Path | None = None
) -> NatsClient:
    """A connection that reconnects for ever, to any node listed in the (comma-separated) url,
    with `creds` (default: resolve_creds)."""
    url = url or resolve_nats_url(settings)
    options = credential_options(creds or resolve_creds(settings), settings.nats_tls_ca)
    nc = NatsClient()
    events = ConnectionLog(nc)
    connecting = asyncio.ensure_future(
        nc.connect(
            [server.strip() for server in url.split(",")],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds; typed int, used as float
            error_cb=events.error,
            disconnected_cb=events.disconnected,
            reconnected_cb=events.reconnected,
            **options,
        )
    )
    refused = asyncio.ensure_future(events.refused.wait())
    await asyncio.wait((connecting, refused), return_when=asyncio.FIRST_COMPLETED)
    refused.cancel()
    if not connecting.done():
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await nc.close()
        raise refusal(url, options)
    try:
        connecting.result()
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        raise NotReachableError(f"cannot reach NATS at {url}: {exc}") from None
    events.connected_once = True
    return nc


def refusal(url: str, options: dict[str, Any]) -> ForbiddenError:
    """What to tell someone whose credentials the server refused: which file, never its key."""
    held = options.get("nkeys_seed") or options.get("user_credentials")
    if held:
        return ForbiddenError(f"NATS at {url} refused the credentials in {held}")
    return ForbiddenError(f"NATS at {url} needs credentials: set NATS_CREDS (or --creds)")


async def provision(
    js: JetStreamContext, settings: Settings, patience_s: float = PROVISION_PATIENCE_S
) -> None:
    """Create or update the streams and durable consumers; safe to run from every process.
    Waits up to `patience_s` for JetStream to answer (a cluster still electing its leaders)."""
    backoff = Backoff("provisioning JetStream streams", max_s=5.0)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            await _provision(js, settings)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() >= deadline:
                raise NotReachableError(
                    f"JetStream did not answer within {patience_s:g} s ({describe(exc)}); is "
                    f"NATS running with JetStream, and, with stream_replicas "
                    f"{settings.stream_replicas}, are that many cluster nodes up?"
                ) from None
            await backoff.wait(exc)
        else:
            backoff.succeeded()
            return


async def _provision(js: JetStreamContext, settings: Settings) -> None:
    for config in stream_configs(settings.stream_replicas):
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            await js.update_stream(config=config)
    for stream, consumer in consumer_configs(settings):
        await js.add_consumer(stream, config=consumer)
    await provision_bucket(js, settings.stream_replicas)


def write_state_nats_url(state_dir: Path, url: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / NATS_URL_FILE).write_text(url + "\n")


async def answers(
    nc: NatsClient, subject: str, payload: bytes = b"{}", timeout_s: float = 0.5
) -> bool:
    """Whether a service answers a request on `subject` (any answer, within `timeout_s`): how
    `llmbus up` and the gateway's /readyz tell that a service is serving."""
    try:
        await nc.request(subject, payload, timeout=timeout_s)
    except Exception:
        return False
    return True
