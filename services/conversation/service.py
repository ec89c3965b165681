"""The conversation service process: it serves llmbus.conversation.* and llmbus.prompt.* (see
handlers.py), and records the outcomes of chat turns on their conversations.

The store is written on one thread, so commands of this process never race each other; a save
that races another process is read back and retried by the application. Message contents are
never logged: only ids, subjects and error types.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from eventsourcing.persistence import Notification
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from llmbus.services.conversation.application import (
    ConversationApplication,
    Listings,
    NewConversation,
    Outcome,
)
from llmbus.services.conversation.application.conversations import waited_conversation
from llmbus.services.conversation.application.views import chat_reply
from llmbus.services.conversation.context import ContextFitter
from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.handlers import (
    ConversationHandlers,
    PromptHandlers,
    conversation_router,
)
from llmbus.services.conversation.metering import conversation_metrics
from llmbus.services.conversation.outbox import ConversationRoute
from llmbus.shared import consuming, deadletter, subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.contracts import CompletionFailed, CompletionReceived
from llmbus.shared.contracts.conversation import ChatReply, SendMessage
from llmbus.shared.lifecycle import serve_service
from llmbus.shared.limits import Limits
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.rpc import SharedConnectionBroker
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.conversation")
T = TypeVar("T")
Turn = tuple[str, str]  # conversation id, request id
FETCH_BATCH = 100
# a reply stored by another conversation service sharing the store wakes no waiter here
RECHECK_S = 2.0
ANNOUNCE_WAIT_S = 5.0


class ConversationRelay(OutboxRelay):
    """The outbox relay, and a way to wait until it has published a position.

    A chat turn's request is rebuilt from its conversation, read from the store: that is done
    where the batch is read, off the event loop.
    """

    def __init__(self, app: ConversationApplication, js: JetStreamContext) -> None:
        self.conversation_route = ConversationRoute(app)
        super().__init__(
            app, js, self.conversation_route, service="conversation", name="conversation-outbox"
        )
        self._progress = asyncio.Event()

    def _select(self) -> tuple[list[Notification], int]:
        notifications, seen_up_to = super()._select()
        self.conversation_route.prepare(notifications)
        return notifications, seen_up_to

    async def publish_pending(self) -> int:
        moved = await super().publish_pending()
        if moved:
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
        return moved

    async def published_past(self, position: int) -> None:
        while self.position < position:
            await self._progress.wait()


class ConversationService:
    def __init__(
        self,
        settings: Settings,
        app: ConversationApplication,
        nc: NatsClient,
        fitter: ContextFitter,
    ) -> None:
        self.settings = settings
        self.app = app
        self.nc = nc
        self.js = nc.jetstream()
        self.fitter = fitter
        self.store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conversation-store")
        self.listings = Listings(app)
        self.relay = ConversationRelay(app, self.js)
        # (conversation id, request id) -> sends waiting for that turn's outcome
        self.waiting: dict[Turn, list[asyncio.Future[Conversation]]] = {}
        self.stopping = asyncio.Event()
        # requests are served on this process's one connection
        self.broker = SharedConnectionBroker(nc)
        router = conversation_router(
            ConversationHandlers(self),
            PromptHandlers(self),
            lambda: nc.max_payload,
            ClientDirectory(nc.jetstream()),
        )
        self.broker.include_router(router)
        self.metrics = conversation_metrics(settings)

    async def on_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.store, fn, *args)

    async def start(self) -> None:
        self.metrics.start(self.js)  # first: a port in use stops the start
        await self.on_store(self.listings.catch_up)
        await self.broker.start()
        await self.nc.subscribe(
            subjects.CONVERSATION_TURN_CONFLICT, queue=subjects.CONVERSATION_QUEUE,
            cb=self.turn_conflict,
        )  # fmt: skip

    async def turn_conflict(self, msg: Msg) -> None:
        """A turn's request_id was another client's request's: the completion service refused
        it, publishing no event (that id's events are the other request's), and tells only us.
        The turn fails with request_conflict, once the recorder finds it is this turn's."""
        try:
            refused = CompletionFailed.model_validate_json(msg.data)
            changed = await self.on_store(self.app.record_outcomes, [refused])
        except Exception:
            log.exception("could not record a refused chat turn")
            return
        self.wake(changed, [refused])

    async def send(
        self, req: SendMessage, request_id: str, sent_by: str | None = None
    ) -> ChatReply:
        # waiting starts before the turn is stored: its outcome cannot slip past unseen
        turn = (waited_conversation(req, request_id), request_id)
        waiter = self._wait(turn) if req.wait else None
        try:
            # without an id, the turn starts a conversation, stored with it in one save
            target: str | NewConversation = req.conversation_id or ""
            if req.conversation_id is None:
                target = NewConversation(req.title, req.metadata, req.system)
            conversation = await self.on_store(
                self.app.send, req.user_id, target, req.content, request_id,
                req.model, req.params.model_dump(exclude_none=True), self.fitter, self.limits(),
                self.settings.conversation.default_model, req.stream, sent_by,
            )  # fmt: skip
            self.relay.poke()
            log.info("turn %s stored on conversation %s", request_id, conversation.id)
            reply = chat_reply(conversation, request_id)
            if waiter is not None and reply.status == "pending":
                reply = await self._outcome(conversation, request_id, waiter)
            return reply
        finally:
            if waiter is not None:
                self._forget(turn, waiter)

    def limits(self) -> Limits:
        return Limits(self.settings.completion.max_request_bytes, self.nc.max_payload)

    def _wait(self, turn: Turn) -> asyncio.Future[Conversation]:
        waiter: asyncio.Future[Conversation] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(turn, []).append(waiter)
        return waiter

    def _forget(self, turn: Turn, waiter: asyncio.Future[Conversation]) -> None:
        waiters = self.waiting.get(turn, [])
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiters:
            self.waiting.pop(turn, None)

    async def _outcome(
        self, conversation: Conversation, request_id: str, waiter: asyncio.Future[Conversation]
    ) -> ChatReply:
        """The reply once the turn's outcome is stored; still pending at the deadline or on
        shutdown (the outcome is recorded all the same)."""
        deadline = time.monotonic() + self.settings.budget_lease_s
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        try:
            while time.monotonic() < deadline and not self.stopping.is_set():
                await asyncio.wait(
                    [waiter, stopping], timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED
                )
                if waiter.done():
                    return chat_reply(waiter.result(), request_id)
                user_id = conversation.user_id
                conversation = await self.on_store(
                    self.app.conversation, user_id, str(conversation.id)
                )
                reply = chat_reply(conversation, request_id)
                if reply.status != "pending":
                    return reply
            return chat_reply(conversation, request_id)
        finally:
            stopping.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        await self.consume(stop)
        await self.stop_serving()
        await self.metrics.stop()

    async def consume(self, stop: asyncio.Event) -> None:
        log.info("conversation service ready")
        await consuming.consume(
            self.js, subjects.CONVERSATION_CONSUMER, subjects.EVENTS_STREAM, self.record, stop,
            FETCH_BATCH, "completion outcomes",
        )  # fmt: skip

    async def record(self, msgs: list[Msg]) -> None:
        """Store the outcomes of chat turns on their conversations, then ack; outcomes of
        requests that no conversation sent are acked and left alone, and those that are
        invalid or cannot be applied are parked on llmbus.deadletter.conversation."""
        outcomes: list[tuple[Msg, Outcome]] = []
        for msg in msgs:
            try:
                outcome = outcome_of(msg)
            except ValidationError as exc:
                await self.park(msg, deadletter.INVALID_EVENT, deadletter.describe(exc))
                continue
            if outcome.conversation_id:
                outcomes.append((msg, outcome))
        if outcomes:
            changed = await self.record_outcomes(outcomes)
            self.wake(changed, [outcome for _, outcome in outcomes])
        await asyncio.gather(*(m.ack() for m in msgs))

    def wake(self, changed: list[Conversation], outcomes: list[Outcome]) -> None:
        """The sends waiting for these outcomes' turns, on the conversations they changed."""
        by_id = {str(c.id): c for c in changed}
        for outcome in outcomes:
            conversation = by_id.get(outcome.conversation_id or "")
            if conversation is None:
                continue
            # only sends of this conversation's turn hear it, never another's same id
            for waiter in self.waiting.get((str(conversation.id), outcome.request_id), []):
                if not waiter.done():
                    waiter.set_result(conversation)

    async def record_outcomes(self, outcomes: list[tuple[Msg, Outcome]]) -> list[Conversation]:
        """The conversations changed. An outcome the store cannot take is parked: the batch
        is then recorded one outcome at a time, to find it."""
        try:
            return await self.on_store(self.app.record_outcomes, [o for _, o in outcomes])
        except Exception as exc:
            if not deadletter.caused_by_entry(exc):
                raise  # the store is down: the batch is redelivered
        changed: list[Conversation] = []
        for msg, outcome in outcomes:
            try:
                changed += await self.on_store(self.app.record_outcomes, [outcome])
            except Exception as exc:
                if not deadletter.caused_by_entry(exc):
                    raise
                await self.park(msg, deadletter.UNRECORDABLE, deadletter.describe(exc))
        return changed

    async def park(self, msg: Msg, error_type: str, reason: str) -> None:
        msg_id = f"dlq:{msg.metadata.stream}:{msg.metadata.sequence.stream}"
        await deadletter.park(
            self.js, "conversation", msg.data, reason, error_type, msg.subject, msg_id
        )

    async def stop_serving(self) -> None:
        """Answer waiting sends (pending), finish the requests in flight, and take no more."""
        self.stopping.set()
        await self.broker.stop()

    async def announce(self) -> None:
        """Return once the outbox has published what is stored, so a completion worker has
        dropped its cached copy of a changed prompt before the caller hears back (waiting up
        to ANNOUNCE_WAIT_S when NATS is slow)."""
        stored = await self.on_store(self.app.recorder.max_notification_id) or 0
        self.relay.poke()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.relay.published_past(stored), ANNOUNCE_WAIT_S)

    async def close(self) -> None:
        await self.metrics.stop()  # if it started, and run did not end
        self.store.shutdown()


def outcome_of(msg: Msg) -> Outcome:
    if msg.subject == subjects.COMPLETION_FAILED:
        return CompletionFailed.model_validate_json(msg.data)
    return CompletionReceived.model_validate_json(msg.data)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async def build(app: ConversationApplication, nc: NatsClient) -> ConversationService:
        catalog = ModelCatalog(settings)
        await asyncio.to_thread(catalog.warm_up)
        return ConversationService(settings, app, nc, ContextFitter(catalog))

    await serve_service(settings, stop, "conversation", ConversationApplication, build)
