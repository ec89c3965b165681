"""The async Python SDK's Client: connect, queue completions and wait for them, chat; the
request/reply families hang off it as sub-clients (client.prompts, client.budgets, …)."""

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.client._transport import DEFAULT_TIMEOUT_S, call, new_request_id
from llmbus.client.budgets import Budgets
from llmbus.client.conversations import Conversations
from llmbus.client.keys import Keys
from llmbus.client.outcome import CompletionError, terminal_event
from llmbus.client.prices import Prices
from llmbus.client.prompts import Prompts
from llmbus.client.streaming import CompletionStream
from llmbus.client.usage import Usage
from llmbus.shared import bus, subjects
from llmbus.shared.contracts import CompletionReceived, CompletionRequested
from llmbus.shared.contracts.conversation import ChatReply
from llmbus.shared.contracts.estimate import Estimate, EstimateRequest
from llmbus.shared.contracts.requests import CancelReply, CompletionStatus, RequestRef
from llmbus.shared.errors import LlmbusError, RequestError
from llmbus.shared.limits import Limits
from llmbus.shared.settings import Settings, load_settings


def retry_id(request_id: str, attempt: int) -> str:
    """The id of the attempt-th re-send of a request that failed retryably. A request_id is an
    idempotency key: sent again, it gets its first outcome back, so a retry is a new request."""
    suffix = f":retry-{attempt}"
    return request_id[: 128 - len(suffix)] + suffix


class Client:
    """`async with Client() as client:` one NATS connection for every call below.

    client.prompts, client.budgets, client.conversations and client.usage group the
    request/reply calls by what they act on."""

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        creds: str | Path | None = None,
        settings: Settings | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        """`creds`: the credentials file `llmbus clients create` printed (default: NATS_CREDS,
        else the operator's from the state folder of `llmbus up`)."""
        self.settings = settings or load_settings()
        self.nats_url = nats_url
        self.creds = Path(creds) if creds is not None else None
        self.timeout_s = timeout_s
        self._nc: NatsClient | None = None
        self._owns_nc = True
        # one reply subscription per client, not a SUB/UNSUB per request
        self._reply_prefix: str | None = None
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        self._tokens = itertools.count()
        self.prompts = Prompts(self)
        self.budgets = Budgets(self)
        self.conversations = Conversations(self)
        self.usage = Usage(self)
        self.prices = Prices(self)
        self.keys = Keys(self)

    @classmethod
    def on_connection(
        cls, nc: NatsClient, settings: Settings, *, timeout_s: float = 120.0
    ) -> "Client":
        """A client on a connection its caller made and drains (a service's one connection,
        from shared/bus): close() leaves the connection to it."""
        client = cls(settings=settings, timeout_s=timeout_s)
        client._nc, client._owns_nc = nc, False
        return client

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
            self._nc = await bus.connect(
                self.settings, "llmbus-client", self.nats_url, creds=self.creds
            )

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc, self._reply_prefix = self._nc, None, None
            if not self._owns_nc:
                return  # its owner drains it, and the reply subscription with it
            if nc.is_connected:
                await nc.drain()  # let what is queued go out and replies in flight land
            else:
                await nc.close()  # drain refuses a connection that is down: nothing to flush

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise LlmbusError("client is not connected: use `async with Client() as client`")
        return self._nc

    def request(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        model: str | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> CompletionRequested:
        """A request for `model`, or for `role=` (neither: the configured default role)."""
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
        token, reply = self._expect_reply()
        try:
            await self.submit(request, reply_to=await self._reply_to(token))
            data = await asyncio.wait_for(reply, self.timeout_s)
        except TimeoutError:
            raise LlmbusError(
                f"no reply for request {request.request_id} within {self.timeout_s}s; "
                "is a completion service running?"
            ) from None
        finally:
            self._replies.pop(token, None)
        return terminal_event(data)

    def stream(
        self,
        prompt: str | Sequence[dict[str, str]] | CompletionRequested,
        *,
        model: str | None = None,
        **fields: Any,
    ) -> CompletionStream:
        """`async for chunk in client.stream("Hi", model=...)`: the reply as it is generated,
        then a final chunk with its usage and cost; `.result` holds the terminal event after."""
        if isinstance(prompt, CompletionRequested):
            return CompletionStream(self, prompt)
        return CompletionStream(self, self.request(prompt, model=model, **fields))

    async def status(
        self, request_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> CompletionStatus:
        """queued, running (since, model, attempts), received or failed (outcome), or unknown."""
        return await call(self.nc, subjects.COMPLETION_STATUS, RequestRef(request_id=request_id),
                          CompletionStatus, service="completion", timeout_s=timeout_s)  # fmt: skip

    async def cancel(self, request_id: str, *, timeout_s: float = 15.0) -> CancelReply:
        """Stop a request: a running call is stopped and what it generated is charged; a queued
        one ends cancelled when a worker takes it; a finished one says how it ended."""
        return await call(self.nc, subjects.COMPLETION_CANCEL, RequestRef(request_id=request_id),
                          CancelReply, service="completion", timeout_s=timeout_s)  # fmt: skip

    def _expect_reply(self) -> "tuple[str, asyncio.Future[bytes]]":
        token = str(next(self._tokens))
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[token] = reply
        return token, reply

    async def _reply_to(self, token: str) -> str:
        return f"{await self._reply_inbox()}.{token}"

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

    async def estimate(
        self,
        prompt: str | Sequence[dict[str, str]] | None = None,
        *,
        model: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        **fields: Any,
    ) -> Estimate:
        """What a request would cost at most, with no model called: the model routing picks, the
        prompt's tokens, the worst case at list price and what is left in each budget. Pass the
        text or messages, or `prompt=PromptRef(...)`-style fields as `prompt_ref={...}`; a `role`
        instead of a model, or neither (the default role); `params`, and ids as for complete()."""
        body: dict[str, Any] = {"model": model} | fields
        if "prompt_ref" in body:
            body["prompt"] = body.pop("prompt_ref")
        elif prompt is not None:
            body["messages"] = (
                [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            )
        request = EstimateRequest.model_validate(body)
        return await call(self.nc, subjects.COMPLETION_ESTIMATE, request, Estimate,
                          service="completion", timeout_s=timeout_s)  # fmt: skip

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
        stream: bool = False,
    ) -> ChatReply:
        """Send a user turn; with wait, return once the reply (or failure) is stored on the
        conversation. A ChatReply with status failed carries the reason; it is not raised.
        Without a conversation_id the turn starts a conversation (title, system, metadata),
        stored only with the turn: a refused turn leaves none. With `stream`, the reply's
        chunks come on llmbus.completion.chunk.<request_id> in llmbus's own account (subscribe
        first, with the request_id you pass)."""
        request = {
            "user_id": user_id, "conversation_id": conversation_id, "content": content,
            "model": model, "params": params or {}, "wait": wait,
            "request_id": request_id or new_request_id(), "title": title, "system": system,
            "metadata": metadata or {}, "stream": stream or None,  # unsent unless asked for
        }  # fmt: skip
        timeout = timeout_s or (self.timeout_s if wait else DEFAULT_TIMEOUT_S)
        late = (
            f"no reply to turn {request['request_id']} within {timeout}s; if the conversation "
            "service is running, the reply is still recorded on the conversation when it comes"
        )
        return await call(self.nc, subjects.CONVERSATION_SEND, request, ChatReply,
                          service="conversation", timeout_s=timeout, late=late)  # fmt: skip
