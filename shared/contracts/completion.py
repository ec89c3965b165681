import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from llmbus.shared.contracts.base import (
    Contract,
    Identity,
    IdText,
    JsonObject,
    RequestId,
    check_json,
    printable,
    utcnow,
)
from llmbus.shared.contracts.clients import ClientName

# Bounds on what a request carries into every event it causes (ids, model, role, tags, prompt
# key): together they stay far below any server's max_payload (see llmbus.shared.limits).
MAX_MODEL_CHARS = 256
MAX_TAGS = 64
MAX_TAG_CHARS = 128
MAX_INT32 = 2**31 - 1


# whitespace or a control character anywhere, or an empty part (`openai/` names no model)
NOT_A_MODEL = re.compile(r"[\s\x00-\x1f\x7f]|^/|/$|//")


def model_name(name: str) -> str:
    if NOT_A_MODEL.search(name):
        raise PydanticCustomError(
            "model_name",
            "a model is a name or provider/name, with no empty part and no spaces",
        )
    return name


ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_MODEL_CHARS), AfterValidator(model_name)
]
Tag = Annotated[str, StringConstraints(max_length=MAX_TAG_CHARS), AfterValidator(printable)]


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
    too_large = "too_large"
    no_capable_model = "no_capable_model"
    cancelled = "cancelled"
    request_conflict = "request_conflict"
    forbidden = "forbidden"
    internal = "internal"


class Message(Contract):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(min_length=1)


class PromptRef(Contract):
    """A managed or domain prompt to render into the messages; label or version, not both."""

    key: str = Field(min_length=1, max_length=100)
    label: str | None = Field(default=None, max_length=100)
    version: StrictInt | None = Field(default=None, ge=1, le=MAX_INT32)
    variables: JsonObject = Field(default_factory=dict)


class CompletionParams(Contract):
    """Model parameters passed through to litellm; unknown ones are kept and forwarded.

    Types are strict: `max_tokens: "100"` or `true` is refused, not read as 100 or 1."""

    model_config = ConfigDict(extra="allow", frozen=True)

    temperature: StrictFloat | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: StrictFloat | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_INT32)
    stop: list[str] | None = None
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**63 - 1)

    @model_validator(mode="after")
    def _forwarded_json(self) -> Self:
        check_json(self.model_extra or {})
        return self


class CompletionRequested(Identity):
    """Published to llmbus.completion.requested. request_id is the idempotency key.

    Whatever a request carries into the events it causes is bounded (ids, model, role, tags);
    free-form JSON (metadata, params, prompt variables) nests at most 32 levels."""

    request_id: RequestId
    user_id: IdText | None = None
    team_id: IdText | None = None
    project_id: IdText | None = None
    conversation_id: IdText | None = None
    workflow_id: IdText | None = Field(
        default=None, description="The agent or workflow run this request belongs to."
    )
    model: ModelName | None = None
    role: str | None = Field(default=None, min_length=1, max_length=100)
    messages: list[Message] | None = Field(default=None, min_length=1)
    prompt: PromptRef | None = None
    params: CompletionParams = Field(default_factory=CompletionParams)
    metadata: JsonObject = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    stream: StrictBool = False
    sent_by: ClientName | None = Field(
        default=None, description="The client that sent the chat turn this request starts: it "
        "hears the chunks, and may ask the status or cancel. Set by the conversation service; "
        "refused from a client.",
    )  # fmt: skip
    requested_at: datetime | None = None

    @model_validator(mode="after")
    def _one_target_and_one_input(self) -> Self:
        check_target_and_input(self.model, self.role, self.messages, self.prompt)
        return self


def check_target_and_input(
    model: str | None, role: str | None, messages: list[Message] | None, prompt: PromptRef | None
) -> None:
    """A request (or an estimate) names a model or a role, not both, and messages or a prompt."""
    if model is not None and role is not None:
        raise ValueError("name a 'model' or a 'role', not both (neither: the default role)")
    if (messages is None) == (prompt is None):
        raise ValueError("exactly one of 'messages' or 'prompt' is required")


class TokenUsage(Contract):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0


class Attempt(Contract):
    """A model tried before the one that answered (or before the request failed)."""

    model: str
    error_type: ErrorType


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
    role: str | None = Field(default=None, description="The role the request was routed by.")
    attempts: list[Attempt] = Field(
        default_factory=list, description="The models that failed before this one answered."
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
    role: str | None = Field(default=None, description="The role the request was routed by.")
    attempts: list[Attempt] = Field(
        default_factory=list, description="The models that failed before the last one."
    )
    usage: TokenUsage | None = Field(
        default=None,
        description="A stream that broke off or a call that was cancelled: what it generated "
        "before, as charged.",
    )
    cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    occurred_at: datetime = Field(default_factory=utcnow)
