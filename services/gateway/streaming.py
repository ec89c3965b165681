"""A streamed completion as OpenAI's server-sent events: `data: {chunk}` per event, then
`data: [DONE]`.

The response starts only with the first chunk, so that a request refused before any text (a
budget, a rate limit, an unknown model) gets its own HTTP status. A failure after it comes as
an `error` event, as OpenAI sends one. A caller that closes the connection mid-way has its
request cancelled, and is charged for the chunks generated until then.
"""

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any, cast

from aiohttp import web

from llmbus.client.outcome import CompletionError
from llmbus.services.gateway.application.completions import Completions
from llmbus.services.gateway.domain import errors
from llmbus.services.gateway.domain.errors import HttpFailure
from llmbus.services.gateway.domain.openai import ChunkObjects
from llmbus.services.gateway.metrics import count_error
from llmbus.shared.contracts import CompletionRequested
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.errors import LlmbusError

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a proxy in front (nginx) passes each event on as it comes
}


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def relay_stream(
    request: web.Request,
    completions: Completions,
    completion: CompletionRequested,
    objects: ChunkObjects,
    headers: dict[str, str],
    rate_limit_pause_s: int,
) -> web.StreamResponse:
    stream = completions.stream(completion)
    chunks = cast(AsyncGenerator[CompletionChunk, None], aiter(stream))
    ended = False
    try:
        try:
            async with asyncio.timeout(completions.timeout_s):
                first = await anext(chunks)
        except TimeoutError:
            completions.abandon(completion.request_id)
            raise
        response = web.StreamResponse(headers=SSE_HEADERS | headers)
        await response.prepare(request)
        await response.write(event(objects.opening()))
        ended = await _relay(response, chunks, first, objects, rate_limit_pause_s)
        if not ended:
            completions.abandon(completion.request_id)
            ended = True
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        # the caller closed the connection: the model stops, what it generated is charged
        if not ended:
            completions.abandon(completion.request_id)
        raise
    finally:
        await chunks.aclose()


async def _relay(
    response: web.StreamResponse,
    chunks: AsyncGenerator[CompletionChunk, None],
    first: CompletionChunk,
    objects: ChunkObjects,
    rate_limit_pause_s: int,
) -> bool:
    """Every chunk from `first` on; whether the request has ended (and needs no cancel)."""
    chunk: CompletionChunk | None = first
    try:
        while chunk is not None:
            if chunk.final and chunk.error_type is None:
                for closing in objects.closing(chunk):
                    await response.write(event(closing))
            elif chunk.delta and not chunk.final:
                await response.write(event(objects.content(chunk.delta)))
            chunk = await anext(chunks, None)
    except CompletionError as exc:  # it broke off, or was cancelled: the failure says so
        await _fail(response, errors.failure(exc.failed, rate_limit_pause_s))
        return True
    except LlmbusError as exc:  # no chunk for too long: the caller cancels the request
        await _fail(response, errors.unavailable(str(exc)))
        return False
    await response.write(DONE)
    await response.write_eof()
    return True


async def _fail(response: web.StreamResponse, failure: HttpFailure) -> None:
    count_error(failure.code)
    await response.write(event(failure.body()))
    await response.write_eof()
