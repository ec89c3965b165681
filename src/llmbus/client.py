"""The async Python SDK: publish completion requests and query usage over NATS."""

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

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
    BudgetThresholdReached,
)
from llmbus.shared.errors import LlmbusError, RequestError
from llmbus.shared.settings import Settings, load_settings


class CompletionError(LlmbusError):
    """The request ended in CompletionFailed."""

    def __init__(self, failed: CompletionFailed):
        super().__init__(f"{failed.error_type.value}: {failed.message}")
        self.failed = failed


def new_request_id() -> str:
    return uuid.uuid4().hex


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
        await self.nc.jetstream().publish(
            subjects.COMPLETION_REQUESTED,
            request.model_dump_json(exclude_none=True).encode(),
            headers=headers,
        )
        return request.request_id

    async def complete(
        self,
        prompt: str | Sequence[dict[str, str]] | CompletionRequested,
        *,
        model: str | None = None,
        **fields: Any,
    ) -> CompletionReceived:
        """Queue the request and wait for its terminal event; raises CompletionError on failure."""
        if isinstance(prompt, CompletionRequested):
            request = prompt
        else:
            if model is None:
                raise LlmbusError("complete() needs model=")
            request = self.request(prompt, model=model, **fields)
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

    async def _ask(self, subject: str, payload: bytes, timeout_s: float) -> Any:
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout_s)
        except (TimeoutError, NoRespondersError):
            raise LlmbusError(f"no answer on {subject}: is the usage service running?") from None
        answer = json.loads(msg.data)
        if isinstance(answer, dict) and "error_type" in answer:
            raise RequestError(answer["error_type"], answer.get("message", ""))
        return answer


def terminal_event(data: bytes) -> CompletionReceived:
    try:
        return CompletionReceived.model_validate_json(data)
    except ValidationError:
        raise CompletionError(CompletionFailed.model_validate_json(data)) from None
