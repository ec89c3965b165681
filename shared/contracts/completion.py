from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from llmbus.shared.contracts.base import Contract, Identity, RequestId, utcnow


class ErrorType(StrEnum):
    malformed_json = "malformed_json"
    invalid_request = "invalid_request"
    unknown_model = "unknown_model"
    authentication = "authentication"
    rate_limited = "rate_limited"
    provider_error = "provider_error"
    timeout = "timeout"
    context_window_exceeded = "context_window_exceeded"
    content_filtered = "content_filtered"
    bad_request = "bad_request"
    budget_exceeded = "budget_exceeded"
    prompt_not_found = "prompt_not_found"
    prompt_inactive = "prompt_inactive"
    invalid_variables = "invalid_variables"
    prompt_unavailable = "prompt_unavailable"
    cancelled = "cancelled"
    internal = "internal"


class Message(Contract):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(min_length=1)


class PromptRef(Contract):
    """A managed or domain prompt to render into the messages; label or version, not both."""

    key: str = Field(min_length=1, max_length=100)
    label: str | None = None
    version: int | None = Field(default=None, ge=1)
    variables: dict[str, Any] = Field(default_factory=dict)


class CompletionParams(Contract):
    """Model parameters passed through to litellm; unknown ones are kept and forwarded."""

    model_config = ConfigDict(extra="allow", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None


class CompletionRequested(Identity):
    """Published to llmbus.completion.requested. request_id is the idempotency key."""

    request_id: RequestId
    model: str | None = Field(default=None, min_length=1)
    role: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1)
    prompt: PromptRef | None = None
    params: CompletionParams = Field(default_factory=CompletionParams)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    stream: bool = False
    requested_at: datetime | None = None

    @model_validator(mode="after")
    def _one_target_and_one_input(self) -> Self:
        if (self.model is None) == (self.role is None):
            raise ValueError("exactly one of 'model' or 'role' is required")
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of 'messages' or 'prompt' is required")
        return self


class TokenUsage(Contract):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0


class CompletionReceived(Identity):
    """Published to llmbus.completion.received when a model answered."""

    request_id: RequestId
    model: str
    provider: str
    content: str | None = Field(
        description="The reply text; null in metadata-only privacy mode (the reply inbox still "
        "gets it)."
    )
    finish_reason: str | None = None
    usage: TokenUsage
    cost_usd: float = Field(ge=0, allow_inf_nan=False)
    latency_ms: float = Field(ge=0, allow_inf_nan=False)
    prompt_key: str | None = Field(default=None, description="The prompt the request named.")
    prompt_version: int | None = Field(
        default=None, description="The version of that prompt the messages were rendered from."
    )
    occurred_at: datetime = Field(default_factory=utcnow)


class CompletionFailed(Identity):
    """Published to llmbus.completion.failed when a request cannot be completed."""

    request_id: str
    error_type: ErrorType
    message: str
    retryable: bool
    model: str | None = None
    provider: str | None = None
    prompt_key: str | None = Field(default=None, description="The prompt the request named.")
    prompt_version: int | None = Field(
        default=None, description="The version resolved, when the prompt got that far."
    )
    occurred_at: datetime = Field(default_factory=utcnow)
