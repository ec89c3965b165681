"""What a provider call gave back, however it ended: the reply, its tokens and its cost."""

from dataclasses import dataclass
from typing import Any

from llmbus.shared.contracts.completion import TokenUsage


@dataclass(frozen=True)
class ModelReply:
    content: str
    finish_reason: str | None
    provider: str
    model: str
    usage: TokenUsage
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None = None  # streamed calls: when the first delta arrived
    price_version: str | None = None  # the price cost_usd was computed at


def cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return cached if isinstance(cached, int) else 0


def token_usage(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached_tokens(usage),
        total_tokens=int(getattr(usage, "total_tokens", 0) or 0) or prompt + completion,
    )
