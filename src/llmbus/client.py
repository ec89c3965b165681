"""The async Python SDK: publish completion requests and query usage over NATS."""

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import DeliverPolicy
from pydantic import BaseModel, ValidationError

from llmbus.shared import bus, subjects
from llmbus.shared.contracts import (
    CompletionFailed,
    CompletionReceived,
    CompletionRequested,
    ErrorReply,
    UsageQuery,
    UsageQueryResult,
)
from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    BudgetExceeded,
    BudgetRemaining,
    BudgetRemainingList,
    BudgetThresholdReached,
    RequestAttributes,
)
from llmbus.shared.contracts.completion import PromptRef
from llmbus.shared.contracts.conversation import (
    ChatReply,
    ConversationPage,
    ConversationSummary,
    ConversationView,
)
from llmbus.shared.contracts.prompt import (
    PlaygroundResult,
    PromptHistory,
    PromptHistoryEntry,
    PromptList,
    PromptPreview,
    PromptSummary,
    PromptView,
    RenderedPrompt,
)
from llmbus.shared.errors import LlmbusError, RequestError
from llmbus.shared.limits import Limits
from llmbus.shared.settings import Settings, load_settings

ReplyT = TypeVar("ReplyT", bound=BaseModel)
CONVERSATION_TIMEOUT_S = 10.0


class CompletionError(LlmbusError):
    """The request ended in CompletionFailed."""

    def __init__(self, failed: CompletionFailed):
        super().__init__(f"{failed.error_type.value}: {failed.message}")
        self.failed = failed


def new_request_id() -> str:
    return uuid.uuid4().hex


def retry_id(request_id: str, attempt: int) -> str:
    """The id of the attempt-th re-send of a request that failed retryably. A request_id is an
    idempotency key: sent again, it gets its first outcome back, so a retry is a new request."""
    suffix = f":retry-{attempt}"
    return request_id[: 128 - len(suffix)] + suffix


class Client:
    def __init__(
        self,
        nats_url: str | None = None,
        *,
        settings: Settings | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.settings = settings or load_settings()
        self.nats_url = nats_url
        self.timeout_s = timeout_s
        self._nc: NatsClient | None = None
        # one reply subscription per client, not a SUB/UNSUB per request
        self._reply_prefix: str | None = None
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        self._tokens = itertools.count()

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._nc is None:
            self._nc = await bus.connect(self.settings, "llmbus-client", self.nats_url)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
            self._reply_prefix = None

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise LlmbusError("client is not connected: use `async with Client() as client`")
        return self._nc

    def request(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        model: str,
        request_id: str | None = None,
        **fields: Any,
    ) -> CompletionRequested:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return CompletionRequested.model_validate(
            {"request_id": request_id or new_request_id(), "model": model, "messages": messages}
            | fields
        )

    async def submit(self, request: CompletionRequested, reply_to: str | None = None) -> str:
        """Queue the request durably and return its request_id at once."""
        headers = {subjects.MSG_ID_HEADER: request.request_id}
        if reply_to:
            headers[subjects.REPLY_TO_HEADER] = reply_to
        payload = request.model_dump_json(exclude_none=True).encode()
        # what the server cannot carry is refused here; the worker may have a lower limit
        limits = Limits(self.nc.max_payload, self.nc.max_payload)
        if len(payload) > limits.request_bytes:
            raise RequestError(
                "too_large", f"request is {len(payload)} bytes; {limits.request_limit_text()}"
            )
        js = self.nc.jetstream()
        ack = await js.publish(subjects.COMPLETION_REQUESTED, payload, headers=headers)
        if ack.duplicate and reply_to:
            # sent before, within JetStream's duplicate window: the stored copy names another
            # inbox. This copy only asks for the outcome, which a worker answers from the store
            # (or once the first copy's call ends); it never calls the model a second time.
            del headers[subjects.MSG_ID_HEADER]
            await js.publish(subjects.COMPLETION_REQUESTED, payload, headers=headers)
        return request.request_id

    async def complete(
        self,
        prompt: str | Sequence[dict[str, str]] | CompletionRequested,
        *,
        model: str | None = None,
        retries: int = 0,
        retry_backoff_s: float = 1.0,
        **fields: Any,
    ) -> CompletionReceived:
        """Queue the request and wait for its terminal event; raises CompletionError on failure.

        `retries`: how many times a retryable failure (rate_limited, timeout, provider_error) is
        sent again, each under a new request_id (see retry_id), after an exponential pause."""
        if isinstance(prompt, CompletionRequested):
            request = prompt
        else:
            if model is None:
                raise LlmbusError("complete() needs model=")
            request = self.request(prompt, model=model, **fields)
        first_id = request.request_id
        for attempt in itertools.count(1):
            try:
                return await self._complete_once(request)
            except CompletionError as error:
                if not error.failed.retryable or attempt > retries:
                    raise
            await asyncio.sleep(retry_backoff_s * 2 ** (attempt - 1))
            request = request.model_copy(update={"request_id": retry_id(first_id, attempt)})
        raise AssertionError("unreachable")

    async def _complete_once(self, request: CompletionRequested) -> CompletionReceived:
        token = str(next(self._tokens))
        reply = asyncio.get_running_loop().create_future()
        self._replies[token] = reply
        try:
            await self.submit(request, reply_to=f"{await self._reply_inbox()}.{token}")
            data = await asyncio.wait_for(reply, self.timeout_s)
        except TimeoutError:
            raise LlmbusError(
                f"no reply for request {request.request_id} within {self.timeout_s}s; "
                "is a completion service running?"
            ) from None
        finally:
            self._replies.pop(token, None)
        return terminal_event(data)

    async def _reply_inbox(self) -> str:
        if self._reply_prefix is None:
            prefix = self.nc.new_inbox()
            await self.nc.subscribe(f"{prefix}.*", cb=self._on_reply)
            self._reply_prefix = prefix
        return self._reply_prefix

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._replies.get(msg.subject.rsplit(".", 1)[-1])
        if reply is not None and not reply.done():
            reply.set_result(msg.data)

    async def usage(
        self,
        by: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        filters: dict[str, str] | None = None,
        limit: int | None = None,
        timeout_s: float = 30.0,
    ) -> UsageQueryResult:
        query = UsageQuery.model_validate(
            {"group_by": list(by), "since": since, "until": until, "filters": filters or {},
             "limit": limit}
        )  # fmt: skip
        try:
            msg = await self.nc.request(
                subjects.USAGE_QUERY, query.model_dump_json().encode(), timeout=timeout_s
            )
        except (TimeoutError, NoRespondersError):
            raise LlmbusError(
                f"no answer on {subjects.USAGE_QUERY}: is the usage service running?"
            ) from None
        try:
            return UsageQueryResult.model_validate_json(msg.data)
        except ValidationError:
            error = ErrorReply.model_validate_json(msg.data)
            raise RequestError(error.error_type, error.message) from None

    async def budget_status(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Spent, reserved and limit of every budget in its current window."""
        rows: list[dict[str, Any]] = await self._ask(subjects.BUDGET_STATUS, b"{}", timeout_s)
        return rows

    async def budget_remaining(
        self,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        project_id: str | None = None,
        model: str | None = None,
        role: str | None = None,
        timeout_s: float = 10.0,
    ) -> list[BudgetRemaining]:
        """What is left (limit - spent - reserved) in each budget a request with these ids,
        model and role would be admitted against: for routing to a model that can still pay."""
        query = RequestAttributes(user=user_id, team=team_id, project=project_id, model=model,
                                  role=role)  # fmt: skip
        answer: dict[str, Any] = await self._ask(
            subjects.BUDGET_REMAINING, query.model_dump_json().encode(), timeout_s
        )
        return BudgetRemainingList.model_validate(answer).budgets

    async def set_budget(
        self, definition: BudgetDefinition | dict[str, Any], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Create or change a budget at run time; the change is stored as an event."""
        budget = BudgetDefinition.model_validate(definition)
        payload = budget.model_dump_json().encode()
        status: dict[str, Any] = await self._ask(subjects.BUDGET_SET, payload, timeout_s)
        return status

    async def budget_events(
        self,
        budget: str | None = None,
        scope: dict[str, str] | None = None,
        replay: bool = False,
    ) -> AsyncIterator[BudgetThresholdReached | BudgetExceeded]:
        """Budget events as they happen, optionally only one budget's or one scope's.

        replay: start from the oldest event JetStream still keeps, not from now.
        """
        sub = await self.nc.jetstream().subscribe(
            "llmbus.budget.*", stream=subjects.EVENTS_STREAM, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW,
        )  # fmt: skip
        try:
            async for msg in sub.messages:
                event: BudgetThresholdReached | BudgetExceeded
                if msg.subject == subjects.BUDGET_EXCEEDED:
                    event = BudgetExceeded.model_validate_json(msg.data)
                else:
                    event = BudgetThresholdReached.model_validate_json(msg.data)
                if budget is not None and event.budget != budget:
                    continue
                if scope is not None and any(event.scope.get(k) != v for k, v in scope.items()):
                    continue
                yield event
        finally:
            await sub.unsubscribe()

    # Conversations (llmbus.conversation.*, served by the conversation service)

    async def create_conversation(
        self,
        user_id: str,
        title: str,
        *,
        metadata: dict[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> ConversationView:
        request = {"user_id": user_id, "title": title, "metadata": metadata or {},
                   "model": model, "system": system}  # fmt: skip
        return await self._call(subjects.CONVERSATION_CREATE, request, ConversationView)

    async def get_conversation(self, user_id: str, conversation_id: str) -> ConversationView:
        request = {"user_id": user_id, "conversation_id": conversation_id}
        return await self._call(subjects.CONVERSATION_GET, request, ConversationView)

    async def list_conversations(
        self, user_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> ConversationPage:
        """One page, newest activity first; pass its next_cursor for the next one."""
        request = {"user_id": user_id, "cursor": cursor, "limit": limit}
        return await self._call(subjects.CONVERSATION_LIST, request, ConversationPage)

    async def rename_conversation(
        self, user_id: str, conversation_id: str, title: str
    ) -> ConversationView:
        request = {"user_id": user_id, "conversation_id": conversation_id, "title": title}
        return await self._call(subjects.CONVERSATION_RENAME, request, ConversationView)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> ConversationSummary:
        request = {"user_id": user_id, "conversation_id": conversation_id}
        return await self._call(subjects.CONVERSATION_DELETE, request, ConversationSummary)

    async def chat(
        self,
        user_id: str,
        conversation_id: str | None,
        content: str,
        *,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        wait: bool = True,
        timeout_s: float | None = None,
        request_id: str | None = None,
        title: str | None = None,
        system: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ChatReply:
        """Send a user turn; with wait, return once the reply (or failure) is stored on the
        conversation. A ChatReply with status failed carries the reason; it is not raised.
        Without a conversation_id the turn starts a conversation (title, system, metadata),
        stored only with the turn: a refused turn leaves none."""
        request = {
            "user_id": user_id, "conversation_id": conversation_id, "content": content,
            "model": model, "params": params or {}, "wait": wait,
            "request_id": request_id or new_request_id(), "title": title, "system": system,
            "metadata": metadata or {},
        }  # fmt: skip
        timeout = timeout_s or (self.timeout_s if wait else CONVERSATION_TIMEOUT_S)
        late = (
            f"no reply to turn {request['request_id']} within {timeout}s; if the conversation "
            "service is running, the reply is still recorded on the conversation when it comes"
        )
        return await self._call(subjects.CONVERSATION_SEND, request, ChatReply, timeout, late)

    # Managed prompts (llmbus.prompt.*, served by the conversation service)

    async def create_prompt(
        self,
        key: str,
        name: str,
        template: Any,
        *,
        variables: Sequence[Any] = (),
        description: str = "",
        labels: Sequence[str] = (),
        author: str | None = None,
        note: str = "",
    ) -> PromptView:
        """A new managed prompt at version 1; raises RequestError duplicate_key if the key is
        taken. `template` is text with {{variable}} placeholders, or a list of chat turns."""
        request = {
            "key": key, "name": name, "template": dumpable(template),
            "variables": [dumpable(v) for v in variables], "description": description,
            "labels": list(labels), "author": author, "note": note,
        }  # fmt: skip
        return await self._call(subjects.PROMPT_CREATE, request, PromptView)

    async def update_prompt(
        self,
        key: str,
        *,
        template: Any = None,
        variables: Sequence[Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        labels: Sequence[str] = (),
        author: str | None = None,
        note: str = "",
    ) -> PromptView:
        """A new immutable version; returns it."""
        request = {
            "key": key, "template": dumpable(template), "name": name,
            "variables": None if variables is None else [dumpable(v) for v in variables],
            "description": description, "labels": list(labels), "author": author, "note": note,
        }  # fmt: skip
        return await self._call(subjects.PROMPT_UPDATE, request, PromptView)

    async def get_prompt(
        self, key: str, *, label: str | None = None, version: int | None = None
    ) -> PromptView:
        request = {"key": key, "label": label, "version": version}
        return await self._call(subjects.PROMPT_GET, request, PromptView)

    async def list_prompts(self, *, include_domain: bool = True) -> list[PromptSummary]:
        request = {"include_domain": include_domain}
        return (await self._call(subjects.PROMPT_LIST, request, PromptList)).items

    async def prompt_history(self, key: str) -> list[PromptHistoryEntry]:
        history = await self._call(subjects.PROMPT_HISTORY, {"key": key}, PromptHistory)
        return history.entries

    async def label_prompt(
        self, key: str, label: str, version: int, *, author: str | None = None
    ) -> PromptView:
        request = {"key": key, "label": label, "version": version, "author": author}
        return await self._call(subjects.PROMPT_LABEL, request, PromptView)

    async def rollback_prompt(
        self, key: str, label: str, version: int, *, author: str | None = None
    ) -> PromptView:
        """Move a label back to an earlier version."""
        request = {"key": key, "label": label, "version": version, "author": author}
        return await self._call(subjects.PROMPT_ROLLBACK, request, PromptView)

    async def activate_prompt(self, key: str, *, author: str | None = None) -> PromptView:
        request = {"key": key, "author": author}
        return await self._call(subjects.PROMPT_ACTIVATE, request, PromptView)

    async def deactivate_prompt(self, key: str, *, author: str | None = None) -> PromptView:
        request = {"key": key, "author": author}
        return await self._call(subjects.PROMPT_DEACTIVATE, request, PromptView)

    async def render_prompt(
        self,
        key: str,
        variables: dict[str, Any],
        *,
        label: str | None = None,
        version: int | None = None,
    ) -> RenderedPrompt:
        """The messages a model would get; raises RequestError invalid_variables naming the
        variable that is missing or of the wrong type."""
        request = {"key": key, "variables": variables, "label": label, "version": version}
        return await self._call(subjects.PROMPT_RENDER, request, RenderedPrompt)

    async def preview_prompt(
        self,
        key: str,
        variables: dict[str, Any],
        model: str,
        *,
        label: str | None = None,
        version: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> PromptPreview:
        """The rendered messages with their tokens counted offline and priced at list price;
        no model is called."""
        request = {"key": key, "variables": variables, "model": model, "label": label,
                   "version": version, "params": params or {}}  # fmt: skip
        return await self._call(subjects.PROMPT_PREVIEW, request, PromptPreview)

    async def playground(
        self,
        key: str,
        variables: dict[str, Any],
        model: str,
        *,
        label: str | None = None,
        version: int | None = None,
        params: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> PlaygroundResult:
        """A preview before the call, then the call itself through the pipeline by prompt
        reference (its usage is accounted to the prompt version); reply.cost_usd is the true
        cost. Raises CompletionError if the call fails."""
        preview = await self.preview_prompt(
            key, variables, model, label=label, version=version, params=params
        )
        ref = PromptRef(key=key, label=label, version=version, variables=variables)
        request = CompletionRequested.model_validate(
            {"request_id": new_request_id(), "model": model, "prompt": ref, "user_id": user_id,
             "params": params or {}}
        )  # fmt: skip
        return PlaygroundResult(preview=preview, reply=await self.complete(request))

    async def _call(
        self,
        subject: str,
        request: dict[str, Any],
        reply_type: type[ReplyT],
        timeout_s: float = CONVERSATION_TIMEOUT_S,
        late: str | None = None,
    ) -> ReplyT:
        payload = json.dumps({k: v for k, v in request.items() if v is not None}).encode()
        if len(payload) > self.nc.max_payload:
            raise RequestError(
                "too_large",
                f"the request is {len(payload)} bytes; the NATS server's max_payload is "
                f"{self.nc.max_payload}",
            )
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout_s)
        except NoRespondersError:
            raise LlmbusError(
                f"no answer on {subject}: is the conversation service running?"
            ) from None
        except TimeoutError:
            raise LlmbusError(
                late
                or f"no answer on {subject} within {timeout_s}s: is the conversation "
                "service running?"
            ) from None
        try:
            return reply_type.model_validate_json(msg.data)
        except ValidationError:
            error = ErrorReply.model_validate_json(msg.data)
            raise RequestError(error.error_type, error.message) from None

    async def _ask(self, subject: str, payload: bytes, timeout_s: float) -> Any:
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout_s)
        except (TimeoutError, NoRespondersError):
            raise LlmbusError(f"no answer on {subject}: is the usage service running?") from None
        answer = json.loads(msg.data)
        if isinstance(answer, dict) and "error_type" in answer:
            raise RequestError(answer["error_type"], answer.get("message", ""))
        return answer


def dumpable(value: Any) -> Any:
    """Pydantic values (a Variable, ChatTurns) as plain JSON data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [dumpable(v) for v in value]
    return value


def terminal_event(data: bytes) -> CompletionReceived:
    try:
        return CompletionReceived.model_validate_json(data)
    except ValidationError:
        raise CompletionError(CompletionFailed.model_validate_json(data)) from None
