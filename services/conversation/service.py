"""The conversation service process: llmbus.conversation.* and llmbus.prompt.* requests, and the
outcomes of chat turns recorded on their conversations.

The store is written on one thread, so commands of this process never race each other; a save
that races another process is read back and retried by the application. Message contents are
never logged: only ids, subjects and error types.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

from eventsourcing.persistence import Notification
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from llmbus.services.completion.models import (
    ModelCallFailed,
    ModelGateway,
    Route,
    list_price,
    model_info,
    positive_int,
)
from llmbus.services.conversation.application import (
    DOMAIN_AUTHOR,
    ConversationApplication,
    Fit,
    Listings,
    Messages,
    Outcome,
    check_domain_selector,
    conversation_summary,
    conversation_view,
    prompt_view,
    turn_view,
)
from llmbus.services.conversation.conversation import (
    Conversation,
    ConversationError,
    ConversationNotFound,
    trim_history,
)
from llmbus.services.conversation.outbox import ConversationRoute
from llmbus.services.conversation.prompt import (
    DuplicatePromptKey,
    ManagedPrompt,
    PromptError,
    PromptInactive,
    PromptNotFound,
)
from llmbus.shared import bus, deadletter, subjects
from llmbus.shared.contracts import (
    CompletionFailed,
    CompletionReceived,
    ErrorReply,
    ReplyErrorType,
)
from llmbus.shared.contracts.base import too_large
from llmbus.shared.contracts.conversation import (
    ChatReply,
    CreateConversation,
    DeleteConversation,
    GetConversation,
    ListConversations,
    RenameConversation,
    SendMessage,
)
from llmbus.shared.contracts.prompt import (
    CreatePrompt,
    GetPrompt,
    ListPrompts,
    MoveLabel,
    PreviewPrompt,
    PromptHistory,
    PromptHistoryEntry,
    PromptHistoryQuery,
    PromptList,
    PromptPreview,
    RenderedPrompt,
    RenderPrompt,
    ResolvedPrompt,
    ResolvePrompt,
    SetPromptActive,
    UpdatePrompt,
)
from llmbus.shared.errors import TooLargeError
from llmbus.shared.eventstore import open_store
from llmbus.shared.limits import Limits
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.prompts.library import DomainPrompt
from llmbus.shared.prompts.template import RenderError, TemplateError, render
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.conversation")
T = TypeVar("T")
FETCH_BATCH = 100
# a reply stored by another conversation service sharing the store wakes no waiter here
RECHECK_S = 2.0
TOKEN_CACHE_SIZE = 50_000
ANNOUNCE_WAIT_S = 5.0
Handler = Callable[[bytes], Awaitable[BaseModel]]


class ContextFitter:
    """Fits a chat history into a model's context window, less the reply's share of it.

    Tokens are counted offline, as the completion worker counts them for budgets. Trimming
    counts each message alone (a little more than together), so what is kept always fits.
    """

    def __init__(self, settings: Settings, gateway: ModelGateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self._tokens: dict[tuple[str, str, str], int] = {}

    def __call__(self, model: str, messages: Messages, max_tokens: int | None) -> Fit:
        try:
            window = self.context_window(model)
            if window is None:
                return Fit(messages)
            limit = max(window - self.gateway.reply_cap(model, max_tokens), 1)
            if self.gateway.estimate_prompt_tokens(model, messages) <= limit:
                return Fit(messages)
        except ModelCallFailed as failed:
            raise ConversationError(failed.message) from None
        counts = {id(m): self._count(model, m) for m in messages}
        kept, dropped = trim_history(messages, lambda ms: sum(counts[id(m)] for m in ms), limit)
        return Fit(kept, dropped, window)

    def context_window(self, model: str) -> int | None:
        entry = self.settings.model(model)
        if entry is not None and entry.max_input_tokens:
            return entry.max_input_tokens
        target, provider = self.gateway.resolve(model)
        return positive_int(model_info(Route(model, target, provider)).get("max_input_tokens"))

    def _count(self, model: str, message: dict[str, str]) -> int:
        key = (model, message["role"], message["content"])
        tokens = self._tokens.get(key)
        if tokens is None:
            tokens = self.gateway.estimate_prompt_tokens(model, [message])
            if len(self._tokens) >= TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[key] = tokens
        return tokens

    def preview(
        self, model: str, messages: Messages, max_tokens: int | None
    ) -> tuple[int, int, Decimal, Decimal]:
        """Prompt tokens, the reply cap, the input cost and the worst-case cost at list price."""
        try:
            target, provider = self.gateway.resolve(model)
            prompt_tokens = self.gateway.estimate_prompt_tokens(model, messages)
            cap = self.gateway.reply_cap(model, max_tokens)
            worst = self.gateway.worst_case_cost(model, messages, max_tokens)
        except ModelCallFailed as failed:
            raise PromptError(failed.message) from None
        price = list_price(Route(model, target, provider))
        return prompt_tokens, cap, prompt_tokens * price.input_per_token, worst


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
        self.waiting: dict[str, list[asyncio.Future[Conversation]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.subscriptions: list[Subscription] = []
        self.stopping = asyncio.Event()

    async def on_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.store, fn, *args)

    async def start(self) -> None:
        await self.on_store(self.listings.catch_up)
        handlers: dict[str, Handler] = {
            subjects.CONVERSATION_CREATE: self.create_conversation,
            subjects.CONVERSATION_GET: self.get_conversation,
            subjects.CONVERSATION_LIST: self.list_conversations,
            subjects.CONVERSATION_RENAME: self.rename_conversation,
            subjects.CONVERSATION_DELETE: self.delete_conversation,
            subjects.CONVERSATION_SEND: self.send,
            subjects.PROMPT_CREATE: self.create_prompt,
            subjects.PROMPT_UPDATE: self.update_prompt,
            subjects.PROMPT_GET: self.get_prompt,
            subjects.PROMPT_LIST: self.list_prompts,
            subjects.PROMPT_HISTORY: self.prompt_history,
            subjects.PROMPT_LABEL: self.label_prompt,
            subjects.PROMPT_ROLLBACK: self.rollback_prompt,
            subjects.PROMPT_ACTIVATE: self.activate_prompt,
            subjects.PROMPT_DEACTIVATE: self.deactivate_prompt,
            subjects.PROMPT_RENDER: self.render_prompt,
            subjects.PROMPT_PREVIEW: self.preview_prompt,
            subjects.PROMPT_RESOLVE: self.resolve_prompt,
        }
        for subject, handler in handlers.items():
            sub = await self.nc.subscribe(
                subject, queue=subjects.CONVERSATION_QUEUE, cb=self._dispatch(handler)
            )
            self.subscriptions.append(sub)

    def _dispatch(self, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            # a send may wait for its reply: each request gets a task, so none holds up the next
            task = asyncio.create_task(self.reply(msg, handler))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        return on_request

    async def reply(self, msg: Msg, handler: Handler) -> None:
        try:
            answer = await handler(msg.data)
            payload = answer.model_dump_json().encode()
        except Exception as exc:
            error_type, message = error_of(exc)
            if error_type == "internal":
                log.exception("%s failed", msg.subject)
                message = f"{msg.subject} failed inside the conversation service; see its log"
            payload = (
                ErrorReply(error_type=ReplyErrorType(error_type), message=message)
                .model_dump_json()
                .encode()
            )
        if len(payload) > self.nc.max_payload:
            message = (
                f"the answer to {msg.subject} is {len(payload)} bytes, more than the NATS "
                f"server's max_payload of {self.nc.max_payload} bytes"
            )
            payload = (
                ErrorReply(error_type=ReplyErrorType.too_large, message=message)
                .model_dump_json()
                .encode()
            )
        if msg.reply:
            await msg.respond(payload)

    # Conversations

    async def create_conversation(self, data: bytes) -> BaseModel:
        req = CreateConversation.model_validate_json(data)
        conversation = await self.on_store(
            self.app.start, req.user_id, req.title, req.metadata, req.model, req.system
        )
        return conversation_view(conversation)

    async def get_conversation(self, data: bytes) -> BaseModel:
        req = GetConversation.model_validate_json(data)
        conversation = await self.on_store(self.app.conversation, req.user_id, req.conversation_id)
        return conversation_view(conversation)

    async def list_conversations(self, data: bytes) -> BaseModel:
        req = ListConversations.model_validate_json(data)
        return await self.on_store(self.listings.page, req.user_id, req.cursor, req.limit)

    async def rename_conversation(self, data: bytes) -> BaseModel:
        req = RenameConversation.model_validate_json(data)
        conversation = await self.on_store(
            self.app.rename, req.user_id, req.conversation_id, req.title
        )
        return conversation_view(conversation)

    async def delete_conversation(self, data: bytes) -> BaseModel:
        req = DeleteConversation.model_validate_json(data)
        conversation = await self.on_store(self.app.delete, req.user_id, req.conversation_id)
        return conversation_summary(conversation)

    async def send(self, data: bytes) -> BaseModel:
        req = SendMessage.model_validate_json(data)
        request_id = req.request_id or uuid.uuid4().hex
        # waiting starts before the turn is stored: its outcome cannot slip past unseen
        waiter = self._wait(request_id) if req.wait else None
        try:
            conversation = await self.on_store(
                self.app.send, req.user_id, req.conversation_id, req.content, request_id,
                req.model, req.params.model_dump(exclude_none=True), self.fitter, self.limits(),
                self.settings.conversation.default_model,
            )  # fmt: skip
            self.relay.poke()
            log.info("turn %s stored on conversation %s", request_id, conversation.id)
            reply = chat_reply(conversation, request_id)
            if waiter is not None and reply.status == "pending":
                reply = await self._outcome(conversation, request_id, waiter)
            return reply
        finally:
            if waiter is not None:
                self._forget(request_id, waiter)

    def limits(self) -> Limits:
        return Limits(self.settings.completion.max_request_bytes, self.nc.max_payload)

    def _wait(self, request_id: str) -> asyncio.Future[Conversation]:
        waiter: asyncio.Future[Conversation] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(request_id, []).append(waiter)
        return waiter

    def _forget(self, request_id: str, waiter: asyncio.Future[Conversation]) -> None:
        waiters = self.waiting.get(request_id, [])
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiters:
            self.waiting.pop(request_id, None)

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

    async def consume(self, stop: asyncio.Event) -> None:
        log.info("conversation service ready")
        await bus.consume(
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
            by_id = {str(c.id): c for c in changed}
            for _, outcome in outcomes:
                conversation = by_id.get(outcome.conversation_id or "")
                for waiter in self.waiting.get(outcome.request_id, []):
                    if conversation is not None and not waiter.done():
                        waiter.set_result(conversation)
        await asyncio.gather(*(m.ack() for m in msgs))

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
        """Take no new requests, answer waiting sends (pending), and finish those in flight."""
        for sub in self.subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self.stopping.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def announce(self) -> None:
        """Return once the outbox has published what is stored, so a completion worker has
        dropped its cached copy of a changed prompt before the caller hears back (waiting up
        to ANNOUNCE_WAIT_S when NATS is slow)."""
        stored = await self.on_store(self.app.recorder.max_notification_id) or 0
        self.relay.poke()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.relay.published_past(stored), ANNOUNCE_WAIT_S)

    # Prompts

    async def create_prompt(self, data: bytes) -> BaseModel:
        req = CreatePrompt.model_validate_json(data)

        def new_prompt() -> ManagedPrompt:
            return ManagedPrompt.create(
                req.key, req.name, req.template, req.variables, req.description,
                req.author or "", req.labels, req.note,
            )  # fmt: skip

        prompt = await self.on_store(self.app.create_prompt, new_prompt)
        log.info("prompt %s created", prompt.key)
        await self.announce()
        return prompt_view(prompt)

    async def update_prompt(self, data: bytes) -> BaseModel:
        req = UpdatePrompt.model_validate_json(data)

        def update(prompt: ManagedPrompt) -> None:
            prompt.update(
                req.author or "", req.template, req.variables, req.name, req.description,
                req.note, req.labels,
            )  # fmt: skip

        prompt = await self.change_prompt(req.key, update)
        log.info("prompt %s updated to version %d", prompt.key, prompt.latest.number)
        return prompt_view(prompt, version=prompt.latest.number)

    async def change_prompt(
        self, key: str, change: Callable[[ManagedPrompt], Any]
    ) -> ManagedPrompt:
        """Change a stored prompt; answer once workers have heard of the change."""
        prompt = await self.on_store(self.app.change_prompt, key, change)
        await self.announce()
        return prompt

    async def get_prompt(self, data: bytes) -> BaseModel:
        req = GetPrompt.model_validate_json(data)
        prompt = await self.on_store(self.app.find_prompt, req.key)
        return prompt_view(prompt, req.label, req.version)

    async def list_prompts(self, data: bytes) -> BaseModel:
        req = ListPrompts.model_validate_json(data or b"{}")
        return PromptList(items=await self.on_store(self.listings.prompt_list, req.include_domain))

    async def prompt_history(self, data: bytes) -> BaseModel:
        req = PromptHistoryQuery.model_validate_json(data)
        prompt = await self.on_store(self.app.find_prompt, req.key)
        if isinstance(prompt, DomainPrompt):
            entries = [
                PromptHistoryEntry(
                    event="PromptCreated",
                    version=prompt.version,
                    labels=["latest"],
                    author=DOMAIN_AUTHOR,
                    note="defined in code",
                    changes=["name", "description", "template", "variables"],
                )
            ]
        else:
            entries = [PromptHistoryEntry.model_validate(e) for e in prompt.history()]
        return PromptHistory(key=req.key, entries=entries)

    async def label_prompt(self, data: bytes) -> BaseModel:
        req = MoveLabel.model_validate_json(data)
        prompt = await self.change_prompt(
            req.key, lambda p: p.label(req.label, req.version, req.author or "", req.note)
        )
        return prompt_view(prompt, label=req.label)

    async def rollback_prompt(self, data: bytes) -> BaseModel:
        req = MoveLabel.model_validate_json(data)
        prompt = await self.change_prompt(
            req.key, lambda p: p.rollback(req.label, req.version, req.author or "", req.note)
        )
        return prompt_view(prompt, label=req.label)

    async def activate_prompt(self, data: bytes) -> BaseModel:
        req = SetPromptActive.model_validate_json(data)
        prompt = await self.change_prompt(req.key, lambda p: p.activate(req.author or ""))
        return prompt_view(prompt)

    async def deactivate_prompt(self, data: bytes) -> BaseModel:
        req = SetPromptActive.model_validate_json(data)
        prompt = await self.change_prompt(req.key, lambda p: p.deactivate(req.author or ""))
        return prompt_view(prompt)

    async def render_prompt(self, data: bytes) -> BaseModel:
        req = RenderPrompt.model_validate_json(data)
        version, messages = await self.on_store(self.rendered, req)
        return RenderedPrompt.model_validate(
            {"key": req.key, "version": version, "messages": messages}
        )

    def rendered(self, req: RenderPrompt) -> tuple[int, Messages]:
        prompt = self.app.find_prompt(req.key)
        if isinstance(prompt, DomainPrompt):
            check_domain_selector(prompt, req.label, req.version)
            return prompt.version, render(prompt.template, prompt.variables, req.variables)
        chosen, messages = prompt.render(req.variables, req.label, req.version)
        return chosen.number, messages

    async def preview_prompt(self, data: bytes) -> BaseModel:
        req = PreviewPrompt.model_validate_json(data)
        return await self.on_store(self.previewed, req)

    def previewed(self, req: PreviewPrompt) -> PromptPreview:
        version, messages = self.rendered(req)
        tokens, cap, input_cost, worst = self.fitter.preview(
            req.model, messages, req.params.max_tokens
        )
        return PromptPreview.model_validate(
            {"key": req.key, "version": version, "model": req.model, "messages": messages,
             "prompt_tokens": tokens, "max_output_tokens": cap,
             "input_cost_usd": float(input_cost), "worst_case_cost_usd": float(worst)}
        )  # fmt: skip

    async def resolve_prompt(self, data: bytes) -> BaseModel:
        req = ResolvePrompt.model_validate_json(data)
        prompt = await self.on_store(self.app.find_prompt, req.key)
        view = prompt_view(prompt, req.label, req.version)
        return ResolvedPrompt(
            key=view.key, version=view.version, name=view.name, template=view.template,
            variables=view.variables, active=view.active, source=view.source,
        )  # fmt: skip

    def close(self) -> None:
        self.store.shutdown()


def chat_reply(conversation: Conversation, request_id: str) -> ChatReply:
    trimmed = sum(t["dropped"] for t in conversation.trims if t["request_id"] == request_id)
    ids = {"request_id": request_id, "conversation_id": str(conversation.id), "trimmed": trimmed}
    answer = next(
        (t for t in conversation.messages if t.role == "assistant" and t.request_id == request_id),
        None,
    )
    if answer is not None:
        return ChatReply(
            status="completed", message=turn_view(answer), prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, cost_usd=answer.cost_usd, **ids,
        )  # fmt: skip
    failure = next((f for f in conversation.failures if f["request_id"] == request_id), None)
    if failure is not None:
        return ChatReply(
            status="failed", error_type=failure["error_type"], error=failure["message"], **ids
        )
    return ChatReply(status="pending", **ids)


def outcome_of(msg: Msg) -> Outcome:
    if msg.subject == subjects.COMPLETION_FAILED:
        return CompletionFailed.model_validate_json(msg.data)
    return CompletionReceived.model_validate_json(msg.data)


def error_of(exc: Exception) -> tuple[str, str]:
    """The error type and message an ErrorReply carries for a failed request."""
    if isinstance(exc, TooLargeError):
        return "too_large", str(exc)
    if isinstance(exc, ValidationError):
        return "too_large" if too_large(exc) else "invalid_request", describe(exc)
    if isinstance(exc, DuplicatePromptKey):
        return "duplicate_key", str(exc)
    if isinstance(exc, PromptInactive):
        return "prompt_inactive", str(exc)
    if isinstance(exc, RenderError):
        return "invalid_variables", str(exc)
    if isinstance(exc, ConversationNotFound | PromptNotFound):
        return "not_found", str(exc)
    if isinstance(exc, ConversationError | PromptError | TemplateError):
        return "invalid_request", str(exc)
    return "internal", str(exc)


def describe(error: ValidationError) -> str:
    """A pydantic error in one line: where, and what is wrong (never the input value)."""
    parts = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"]) or "request"
        parts.append(f"{where}: {problem['msg']}")
    return "invalid request: " + "; ".join(parts)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    app = await asyncio.to_thread(open_store, ConversationApplication, settings, "conversation")
    gateway = ModelGateway(settings)
    await asyncio.to_thread(gateway.warm_up)
    fitter = ContextFitter(settings, gateway)
    nc = await bus.connect(settings, "llmbus-conversation")
    service = ConversationService(settings, app, nc, fitter)
    try:
        await bus.provision(nc.jetstream(), settings)
        await service.start()
        relay_stop = asyncio.Event()
        relaying = asyncio.create_task(service.relay.run(relay_stop))
        await service.consume(stop)
        await service.stop_serving()
        relay_stop.set()
        service.relay.poke()
        await relaying
        log.info("conversation service stopped; %d messages published", service.relay.published)
    finally:
        await nc.drain()
        service.close()
        app.close()
