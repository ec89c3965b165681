"""What the console streams, as the gateway streams a completion (streaming.relay_stream):
OpenAI chunks whose final usage carries the cost, and chat turns.

A chat turn, streamed: sent to the conversation service with `stream` (llmbus.conversation.send
stores the turn and publishes its request, which streams its chunks), and read as the SDK reads
any streamed request, so that the gateway relays it as it relays a completion
(streaming.relay_stream): as OpenAI chunks, and cancelled when the page stops reading.

The turn stays the conversation service's: it records the reply, or the failure (a stop:
`cancelled`, with what was generated charged), as it records any turn.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from llmbus.client import Client, CompletionError
from llmbus.client.streaming import CompletionStream, _subscribe, _until
from llmbus.services.gateway.application.completions import Completions
from llmbus.services.gateway.domain.openai import ChunkObjects
from llmbus.shared.contracts import CompletionFailed, CompletionRequested
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.contracts.conversation import ChatReply
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.errors import LlmbusError


class CostedChunks(ChunkObjects):
    """OpenAI's chunks, with the call's cost added to the final usage (`cost_usd`): a stream's
    headers leave before its cost is known."""

    def closing(self, final: CompletionChunk) -> list[dict[str, Any]]:
        chunks = super().closing(final)
        usage = chunks[-1].get("usage")
        if isinstance(usage, dict) and final.cost_usd is not None:
            usage["cost_usd"] = final.cost_usd
        return chunks


@dataclass(frozen=True)
class Turn:
    user_id: str
    conversation_id: str
    content: str
    model: str | None = None

    def request(self, request_id: str) -> CompletionRequested:
        """The turn as the request it causes (its history is the conversation service's)."""
        return CompletionRequested.model_validate({
            "request_id": request_id, "model": self.model, "user_id": self.user_id,
            "conversation_id": self.conversation_id, "stream": True,
            "messages": [{"role": "user", "content": self.content}],
        })  # fmt: skip


class TurnStream(CompletionStream):
    def __init__(self, client: Client, request: CompletionRequested, turn: Turn) -> None:
        super().__init__(client, request)
        self.turn = turn

    async def _chunks(self) -> AsyncIterator[CompletionChunk]:
        client, turn = self._client, self.turn
        # subscribed before the turn is sent: no chunk is missed
        sub, received = await _subscribe(client, self.request_id)
        sent = asyncio.ensure_future(client.chat(
            turn.user_id, turn.conversation_id, turn.content, model=turn.model,
            request_id=self.request_id, stream=True,
        ))  # fmt: skip
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        sent.add_done_callback(lambda _: settle(answered))
        try:
            async for msg in _until(sub, received, answered, client.timeout_s, self.request_id):
                chunk = CompletionChunk.model_validate_json(msg.data)
                if chunk.final:
                    self.final = chunk
                yield chunk
            ended(sent.result(), self.final)
        finally:
            sent.cancel()  # left to the conversation service, which records the turn anyway
            await sub.unsubscribe()


def ended(reply: ChatReply, final: CompletionChunk | None) -> None:
    """Raise as a streamed request does when the turn failed; nothing when it was answered."""
    if reply.status == "failed":
        raise CompletionError(CompletionFailed(
            request_id=reply.request_id, conversation_id=reply.conversation_id,
            error_type=error_type(reply.error_type), message=reply.error or "the turn failed",
            retryable=False,
        ))  # fmt: skip
    if reply.status == "pending" and (final is None or final.error_type is not None):
        raise LlmbusError(f"turn {reply.request_id} is not answered yet; reload the conversation")


def settle(answered: "asyncio.Future[bytes]") -> None:
    """The turn was answered (or its send failed): the chunks queued before it are the last."""
    if not answered.done():
        answered.set_result(b"")


def error_type(name: str | None) -> ErrorType:
    try:
        return ErrorType(name or "internal")
    except ValueError:
        return ErrorType.internal


class TurnCompletions(Completions):
    """The gateway's completions, for one turn: a stream is the turn's, and a cancel (the page
    stopped reading) goes through the gateway's own, so that its drain waits for it."""

    def __init__(self, completions: Completions, turn: Turn) -> None:
        super().__init__(completions.client, completions.timeout_s)
        self._completions = completions
        self.turn = turn

    def stream(self, request: CompletionRequested) -> CompletionStream:
        return TurnStream(self.client, request, self.turn)

    def abandon(self, request_id: str) -> None:
        self._completions.abandon(request_id)
