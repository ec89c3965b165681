"""The async Python SDK: publish completion requests and query usage over NATS."""

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
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


def terminal_event(data: bytes) -> CompletionReceived:
    try:
        return CompletionReceived.model_validate_json(data)
    except ValidationError:
        raise CompletionError(CompletionFailed.model_validate_json(data)) from None
