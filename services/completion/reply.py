"""The end of the line: the caller hears how its request ended, and JetStream lets it go.

Also where requests that cannot be served end: refused at intake (CompletionFailed, dead
letter), a request_id re-sent with a different request (request_conflict), and failures inside
llmbus (redelivered, until max_deliver).
"""

import contextlib
import logging

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.services.completion import metering
from llmbus.services.completion.domain import Completion
from llmbus.services.completion.job import Job
from llmbus.services.completion.outbox import dumps
from llmbus.services.completion.parse import Rejected, salvage_request_id
from llmbus.services.completion.store import CompletionStore
from llmbus.shared import deadletter, subjects
from llmbus.shared.contracts import CompletionFailed, ErrorType
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.sections import CompletionSettings

log = logging.getLogger("llmbus.completion")

# a CompletionFailed's message, when a request is refused (the event must stay small)
MAX_REASON_CHARS = 2000


def stored_reply(completion: Completion) -> bytes:
    assert completion.outcome is not None
    return dumps(completion.outcome)


def reply_subject(headers: dict[str, str] | None, client: str | None = None) -> str | None:
    """The caller's Llmbus-Reply-To, if a reply can be published there; the request is served
    either way, and its outcome still goes to the events stream. A client's reply can go only
    to an inbox in its own account (through llmbus.reply.<client>.>)."""
    reply_to = (headers or {}).get(subjects.REPLY_TO_HEADER)
    if not reply_to:
        return None
    if client is not None:
        routed = subjects.client_reply_subject(client, reply_to)
    else:
        routed = reply_to if subjects.is_reply_subject(reply_to) else None
    if routed is None:
        log.warning("%s is not a subject a reply can go to: no reply", subjects.REPLY_TO_HEADER)
    return routed


class Reply:
    def __init__(
        self, config: CompletionSettings, nc: NatsClient, store: CompletionStore, relay: OutboxRelay
    ) -> None:
        self.config = config
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.relay = relay

    async def send(self, job: Job, payload: bytes) -> None:
        """The request ended (stored and on its way out by the outbox): tell the caller, ack."""
        if job.replied is not None and not job.replied.done():
            job.replied.set_result(payload)  # copies of this request waiting on it
        await self.publish(job.reply_to, payload)
        await job.msg.ack()
        self.relay.poke()  # after the reply: the caller waits on it, not on the events

    async def conflict(self, job: Job) -> None:
        """The request_id was used before for a different request, or by another client: the
        first outcome stands, untouched, and this one is neither called nor stored; only its
        caller hears of it: a chat turn's caller is its conversation service."""
        log.warning("request %s re-sent with a different request: refused", job.request_id)
        request = job.request
        refused = CompletionFailed(
            request_id=job.request_id,
            error_type=ErrorType.request_conflict,
            message=f"request_id {job.request_id!r} was already used for a different request "
            "(or by another client); its outcome stands. A request_id is the idempotency key: "
            "send a changed request with a new request_id.",
            retryable=False,
            model=job.model,
            user_id=request.user_id,
            conversation_id=request.conversation_id,
        )
        payload = dumps(refused.model_dump(mode="json"))
        metering.ended(job.model, ErrorType.request_conflict.value)
        await self.publish(job.reply_to, payload)
        if job.owner is None and request.conversation_id is not None:
            await self.publish(subjects.CONVERSATION_TURN_CONFLICT, payload)
        await job.msg.ack()

    async def refuse(self, msg: Msg, rejected: Rejected, reply_to: str | None) -> None:
        """A client's request refused at intake: only its sender hears why, and the message is
        kept as a dead letter. No event is stored or published under its request_id, which may
        be another owner's (a forged refusal would end their request)."""
        log.warning("refused request %s: %s", rejected.request_id, rejected.error_type.value)
        metering.ended(None, rejected.error_type.value)
        if rejected.request_id is not None:
            refused = rejected_event(rejected, rejected.request_id)
            await self.publish(reply_to, dumps(refused.model_dump(mode="json")))
        await self.dead_letter(msg.data, msg.subject, msg.metadata.sequence.stream, rejected)
        await msg.ack()

    async def reject(self, msg: Msg, rejected: Rejected, reply_to: str | None) -> None:
        await self.fail(msg.data, msg.subject, msg.metadata.sequence.stream, rejected, reply_to)
        await msg.ack()

    async def fail(
        self, data: bytes, subject: str, seq: int, rejected: Rejected, reply_to: str | None
    ) -> None:
        """End a request that cannot be served: CompletionFailed if it has an id, dead letter."""
        log.warning(
            "rejected request %s: %s", rejected.request_id or "(no id)", rejected.error_type.value
        )
        if rejected.request_id is None:
            metering.ended(None, rejected.error_type.value)
        else:
            event = rejected_event(rejected, rejected.request_id).model_dump(mode="json")
            stored = await self.store.record_rejected(rejected.request_id, event)
            if stored.outcome is event:  # not a copy's, rejected before
                metering.ended(None, rejected.error_type.value)
            self.relay.poke()
            await self.publish(reply_to, stored_reply(stored))
        await self.dead_letter(data, subject, seq, rejected)

    async def dead_letter(self, data: bytes, subject: str, seq: int, rejected: Rejected) -> None:
        about = {"request_id": rejected.request_id, "stream_seq": seq}
        if self.config.privacy == "metadata_only":
            # contents never leave the request path in this mode, not even into dead letters
            data = dumps({"redacted": True, "bytes": len(data)} | about)
        await deadletter.park(
            self.js,
            "completion",
            data,
            rejected.message,
            rejected.error_type.value,
            subject,
            f"dlq:{subjects.REQUESTS_STREAM}:{seq}",
            about,
        )

    async def retry_later(self, msg: Msg, reply_to: str | None) -> None:
        with contextlib.suppress(Exception):
            if msg.metadata.num_delivered < self.config.max_deliver:
                await msg.nak(delay=1.0)
                return
            rejected = Rejected(
                ErrorType.internal,
                f"request failed {msg.metadata.num_delivered} times inside llmbus; see its logs",
                salvage_request_id(msg.data),
            )
            await self.reject(msg, rejected, reply_to)

    async def publish(self, reply_to: str | None, payload: bytes) -> None:
        """Send the terminal event to the caller's inbox. It is stored and published already:
        an inbox that cannot take it is the caller's loss, not a reason to handle it again."""
        if reply_to is None:
            return
        try:
            await self.nc.publish(reply_to, payload)
        except Exception as exc:
            log.warning("could not reply on %s: %s", reply_to, str(exc) or type(exc).__name__)


def rejected_event(rejected: Rejected, request_id: str) -> CompletionFailed:
    """How a request refused before any call ends, as its caller hears it."""
    return CompletionFailed(
        request_id=request_id,
        error_type=rejected.error_type,
        message=rejected.message[:MAX_REASON_CHARS],
        retryable=False,
    )
