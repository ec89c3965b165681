"""A gateway request's completion through the SDK: with a deadline, and cancelled (through the
SDK's cancel, so that what was generated is charged) when its caller goes away or the deadline
passes, rather than left to run for no one."""

import asyncio
import logging

from llmbus.client import Client
from llmbus.client.streaming import CompletionStream
from llmbus.services.gateway.metrics import CANCELLED
from llmbus.shared.contracts import CompletionReceived, CompletionRequested

log = logging.getLogger("llmbus.gateway")
# the SDK's own wait outlasts the gateway's deadline, so that the gateway's is the one that ends
SDK_MARGIN_S = 5.0


class Completions:
    def __init__(self, client: Client, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._cancelling: set[asyncio.Task[None]] = set()

    async def complete(self, request: CompletionRequested) -> CompletionReceived:
        """The terminal event; CompletionError for a failure, TimeoutError after the deadline."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.client.complete(request)
        except (TimeoutError, asyncio.CancelledError):
            self.abandon(request.request_id)
            raise

    def stream(self, request: CompletionRequested) -> CompletionStream:
        return self.client.stream(request)

    def abandon(self, request_id: str) -> None:
        """Cancel the request in a task of its own: the caller's may itself be cancelled."""
        CANCELLED.inc()
        task = asyncio.create_task(self._cancel(request_id), name=f"cancel-{request_id}")
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _cancel(self, request_id: str) -> None:
        try:
            reply = await self.client.cancel(request_id)
        except Exception as exc:
            log.warning("could not cancel request %s: %s", request_id, exc)
        else:
            log.info("request %s abandoned by its caller: %s", request_id, reply.result)

    async def drain(self) -> None:
        """Wait for the cancels under way, before the connection they use drains."""
        if self._cancelling:
            await asyncio.gather(*self._cancelling, return_exceptions=True)
