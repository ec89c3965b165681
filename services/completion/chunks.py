"""A streamed request's chunks, published on core NATS as they arrive: each delta in order,
then a final chunk with the usage and the cost. Only the client that sent the request hears
them (subjects.chunk_subject); nothing is stored, since the terminal event holds the reply."""

import asyncio

from nats.aio.client import Client as NatsClient

from llmbus.services.completion.answer import ModelReply
from llmbus.services.completion.outbox import dumps
from llmbus.shared import subjects


class Chunks:
    def __init__(self, nc: NatsClient, request_id: str, owner: str | None, attempt: int) -> None:
        self.nc = nc
        self.subject = subjects.chunk_subject(request_id, owner)
        self.request_id = request_id
        self.attempt = attempt
        self.index = 0

    async def delta(self, text: str, finish_reason: str | None) -> None:
        chunk: dict[str, object] = {
            "request_id": self.request_id, "index": self.index, "delta": text,
            "attempt": self.attempt,
        }  # fmt: skip
        if finish_reason is not None:
            chunk["finish_reason"] = finish_reason
        self.index += 1
        await self.nc.publish(self.subject, dumps(chunk))
        # let the connection's flusher write it now: the chunks litellm has already buffered
        # (the last delta's successors, the usage) would otherwise keep the loop until the end
        await asyncio.sleep(0)

    async def final(self, reply: ModelReply, error_type: str | None = None) -> None:
        """After the last delta: what the stream came to, before the terminal event."""
        chunk = {
            "request_id": self.request_id, "index": self.index, "final": True,
            "finish_reason": reply.finish_reason, "model": reply.model,
            "usage": reply.usage.model_dump(), "cost_usd": reply.cost_usd,
            "attempt": self.attempt, "error_type": error_type,
        }  # fmt: skip
        await self.nc.publish(self.subject, dumps(chunk))
