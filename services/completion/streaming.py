"""A streamed model call: each delta handed on as it arrives, then the reply settled from the
chunks: the provider's usage when it sent it (stream_options.include_usage), otherwise tokens
counted offline, priced as a whole reply would be (ModelGateway.cost), so that a streamed and a
non-streamed call with the same output cost the same.

A stream that breaks off after its first delta, or is cancelled, is charged for what arrived:
its chunks so far are settled the same way (Streamed.settle). One that breaks off before any
delta is an ordinary failed call, which llmbus may retry or hand to the next model.
"""

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import litellm

from llmbus.services.completion.answer import ModelReply, token_usage
from llmbus.services.completion.errors import ModelCallFailed
from llmbus.services.completion.gateway import ModelGateway
from llmbus.shared.catalog import Route

# where each delta goes (its text, and the finish_reason on the last): the chunk subject
Sink = Callable[[str, str | None], Awaitable[None]]


@dataclass
class Streamed:
    """What a stream has delivered so far, kept by its caller: a cut or a cancel still knows."""

    gateway: ModelGateway
    model: str
    messages: list[dict[str, str]]
    route: Route | None = None
    chunks: list[Any] = field(default_factory=list)
    deltas: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_delta_at: float | None = None

    def settle(self) -> ModelReply:
        """The reply the chunks so far make, with its usage and its cost."""
        route = self.route or self.gateway.route(self.model)
        first = self.first_delta_at
        built = litellm.stream_chunk_builder(self.chunks, messages=self.messages)
        if not isinstance(built, litellm.ModelResponse):
            built = self._prompt_only(route)  # no chunk yet: the prompt was read, nothing more
        choice = built.choices[0] if built.choices else None
        message = getattr(choice, "message", None)
        return ModelReply(
            content=(getattr(message, "content", None) or "") if message else "",
            finish_reason=getattr(choice, "finish_reason", None) if self.chunks else None,
            provider=route.provider,
            model=self.model,
            usage=token_usage(getattr(built, "usage", None)),
            cost_usd=self.gateway.cost(route, built),
            latency_ms=(time.perf_counter() - self.started) * 1000,
            ttft_ms=None if first is None else (first - self.started) * 1000,
            price_version=self.gateway.price_version(self.model),
        )

    def _prompt_only(self, route: Route) -> litellm.ModelResponse:
        tokens = self.gateway.catalog.count_tokens(self.model, self.messages)
        usage = litellm.Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
        return litellm.ModelResponse(model=route.target, usage=usage)


async def stream(
    gateway: ModelGateway,
    streamed: Streamed,
    params: dict[str, Any],
    base: dict[str, Any],
    sink: Sink,
) -> ModelReply:
    """Call streamed.model in streaming mode, handing each delta to `sink`."""
    route = streamed.route = gateway.route(streamed.model)
    kwargs = gateway.call_kwargs(route, streamed.messages, params, base)
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    response = await gateway.call_with_retries(route, kwargs, streamed.started)
    finished = False
    try:
        async for chunk in response:
            streamed.chunks.append(chunk)
            choice = chunk.choices[0] if chunk.choices else None
            if choice is not None and (choice.delta.content or choice.finish_reason):
                if streamed.first_delta_at is None:
                    streamed.first_delta_at = time.perf_counter()
                await sink(choice.delta.content or "", choice.finish_reason)
                streamed.deltas += 1
        finished = True
    except Exception as exc:
        failed = gateway.failure(route, exc, 0, kwargs.get("api_key"), streamed.started)
        if streamed.deltas:
            # mid-way: the caller has seen text, so no retry and no other model; it is charged
            failed.retryable = False
            failed.partial = streamed.settle()
        raise failed from None
    finally:
        if not finished:  # broken off or cancelled: the provider stops generating
            with contextlib.suppress(Exception):
                await response.aclose()
    return streamed.settle()


def cut_short(failed: ModelCallFailed) -> bool:
    """A stream that failed after its first delta: it ends here, charged for what arrived."""
    return failed.partial is not None
