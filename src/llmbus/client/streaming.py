"""`async for chunk in client.stream(...)`: a completion's text as it is generated.

The chunk subject is subscribed before the request is sent, so no chunk is missed. The chunks
and the terminal event come from one worker connection in order, so once the terminal event is
in, every chunk before it has reached the subscription: the stream drains it and ends.

The subscription hands each chunk at once to a queue of the stream's own, and the stream waits
on that queue, not on `Subscription.next_msg`: next_msg takes a message in a task of its own,
so cancelling a wait on it (once the terminal event is in) could drop a chunk it had taken.
An asyncio.Queue keeps the item of a cancelled get.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from llmbus.client.outcome import terminal_event
from llmbus.shared import subjects
from llmbus.shared.contracts import CompletionReceived, CompletionRequested
from llmbus.shared.contracts.requests import CancelReply, CompletionChunk
from llmbus.shared.errors import LlmbusError

if TYPE_CHECKING:
    from llmbus.client.core import Client


class CompletionStream:
    """The chunks of one streamed request, in order, ending with the final chunk (usage and
    cost). After the loop, `result` is the CompletionReceived; a request that failed raises
    CompletionError once the chunks that did arrive have been given (a stream cut off mid-way,
    or cancelled: the error's event carries the usage charged)."""

    def __init__(self, client: "Client", request: CompletionRequested) -> None:
        self._client = client
        self.request = request.model_copy(update={"stream": True})
        self.result: CompletionReceived | None = None
        self.final: CompletionChunk | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    async def cancel(self) -> CancelReply:
        return await self._client.cancel(self.request_id)

    def __aiter__(self) -> AsyncIterator[CompletionChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[CompletionChunk]:
        client = self._client
        sub, received = await _subscribe(client, self.request_id)
        token, reply = client._expect_reply()
        try:
            await client.submit(self.request, reply_to=await client._reply_to(token))
            async for msg in _until(sub, received, reply, client.timeout_s, self.request_id):
                chunk = CompletionChunk.model_validate_json(msg.data)
                if chunk.final:
                    self.final = chunk
                yield chunk
            self.result = terminal_event(reply.result())
        finally:
            client._replies.pop(token, None)
            await sub.unsubscribe()


async def _subscribe(
    client: "Client", request_id: str
) -> tuple[Subscription, "asyncio.Queue[Msg]"]:
    """The request's chunk subscription, and the queue it hands each chunk to."""
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def take(msg: Msg) -> None:
        # in the step that takes it from the subscription: a chunk is always in one queue
        received.put_nowait(msg)

    sub = await client.nc.subscribe(
        subjects.COMPLETION_CHUNK.format(request_id=request_id), cb=take
    )
    return sub, received


async def _until(
    sub: Subscription,
    received: "asyncio.Queue[Msg]",
    reply: "asyncio.Future[bytes]",
    timeout_s: float,
    request_id: str,
) -> AsyncIterator[Msg]:
    """The subscription's messages until the terminal event is in, then those queued before it;
    an error after `timeout_s` with neither."""
    deadline = time.monotonic() + timeout_s
    getter: asyncio.Task[Msg] | None = None
    try:
        while not reply.done():
            getter = getter or asyncio.ensure_future(received.get())
            remaining = deadline - time.monotonic()
            waiting: set[asyncio.Future[object]] = {getter, reply}  # type: ignore[arg-type]
            await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                msg, getter = getter.result(), None
                deadline = time.monotonic() + timeout_s  # a long reply is fine; a silent one is not
                yield msg
            elif not reply.done():
                raise LlmbusError(
                    f"nothing on stream {request_id} for {timeout_s}s; is a completion "
                    "service running?"
                )
        if getter is not None:
            getter.cancel()  # a get cancelled after its item came leaves it in the queue
            msg_or_none = await asyncio.gather(getter, return_exceptions=True)
            if isinstance(msg_or_none[0], Msg):
                yield msg_or_none[0]
            getter = None
        # chunks that reached the subscription and wait for its task to hand them over: no
        # more can come, so a few turns of the loop hand them all
        while sub.pending_msgs:  # noqa: ASYNC110
            await asyncio.sleep(0)
        while not received.empty():
            yield received.get_nowait()
    finally:
        if getter is not None:
            getter.cancel()
