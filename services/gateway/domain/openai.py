"""OpenAI's chat.completions as llmbus reads and writes it.

A request body becomes a CompletionRequested booked to the key's user, team and project, never
to any the body names. A CompletionReceived, a stream's CompletionChunks and the catalog become
OpenAI's objects. What llmbus cannot answer as OpenAI would (several choices, tools, images) is
refused with a message that says so, rather than answered differently.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmbus.shared.contracts.base import describe, too_large
from llmbus.shared.contracts.completion import (
    MAX_INT32,
    MAX_MODEL_CHARS,
    CompletionReceived,
    CompletionRequested,
    TokenUsage,
)
from llmbus.shared.contracts.keys import KeyInfo
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.errors import InvalidRequestError, TooLargeError
from llmbus.shared.settings import Settings

# shared/catalog.py's SIM_MODELS, named here so that the gateway need not import litellm to list
# them (a unit test keeps the two equal)
BUILTIN_MODELS = ("llmbus-sim/small", "llmbus-sim/large")
ROLE_OWNER = "llmbus-role"


class BodyError(InvalidRequestError):
    """A body llmbus cannot serve; `param` names the field, as OpenAI's errors do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Body(BaseModel):
    # fields OpenAI has and llmbus has no use for (store, service_tier, ...) are let through
    model_config = ConfigDict(extra="ignore", frozen=True)


class ContentPart(Body):
    type: str
    text: str | None = None


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None


class StreamOptions(Body):
    include_usage: bool = False


class ChatCompletionBody(Body):
    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    user: str | None = Field(default=None, max_length=256)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    # what llmbus refuses (see unsupported); read only to say so
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


@dataclass(frozen=True)
class Extras:
    """What the X-Llmbus-* request headers add: never who the request is booked to."""

    conversation_id: str | None = None
    workflow_id: str | None = None
    tags: tuple[str, ...] = ()


def read_body(raw: bytes) -> ChatCompletionBody:
    """The body parsed once; errors name fields and say what is wrong, never what was sent."""
    try:
        body = ChatCompletionBody.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[:1]
        param = ".".join(str(part) for part in first[0]["loc"]) if first else ""
        raise BodyError(describe(exc, "invalid body"), param or None) from None
    refuse_unsupported(body)
    return body


def refuse_unsupported(body: ChatCompletionBody) -> None:
    choice = (body.tool_choice, body.function_call)
    audio = body.audio is not None or bool(set(body.modalities or ()) - {"text"})
    problems = [
        (param, text)
        for param, text, asked in (
            ("n", "one choice per request only (n: 1)", body.n not in (None, 1)),
            ("tools", "tool and function calling are not supported", body.tools or body.functions),
            ("tool_choice", "no tools to choose", any(c not in (None, "none") for c in choice)),
            ("logprobs", "log probabilities are not supported", body.logprobs or body.top_logprobs),
            ("modalities", "text only", audio),
            ("prediction", "predicted outputs are not supported", body.prediction is not None),
        )
        if asked
    ]  # fmt: skip
    if problems:
        message = "; ".join(f"{param}: {text}" for param, text in problems)
        raise BodyError(f"unsupported by llmbus: {message}", problems[0][0])


def message(index: int, sent: ChatMessage) -> dict[str, str]:
    where = f"messages.{index}"
    if sent.role in ("tool", "function") or sent.tool_calls or sent.function_call:
        raise BodyError(f"{where}: tool and function calls are not supported", where)
    if isinstance(sent.content, list):
        if any(part.type != "text" or part.text is None for part in sent.content):
            raise BodyError(f"{where}.content: only text parts (no images, audio or files)", where)
        text = "".join(part.text or "" for part in sent.content)
    else:
        text = sent.content or ""
    if not text:
        raise BodyError(f"{where}.content: must not be empty", f"{where}.content")
    # OpenAI's newer name for the system prompt of reasoning models
    return {"role": "system" if sent.role == "developer" else sent.role, "content": text}


def params(body: ChatCompletionBody) -> dict[str, Any]:
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    values = {
        "temperature": body.temperature, "top_p": body.top_p,
        "max_tokens": body.max_completion_tokens or body.max_tokens, "stop": stop or None,
        "seed": body.seed, "frequency_penalty": body.frequency_penalty,
        "presence_penalty": body.presence_penalty, "response_format": body.response_format,
        "logit_bias": body.logit_bias,
    }  # fmt: skip
    return {name: value for name, value in values.items() if value is not None}


def completion_request(
    body: ChatCompletionBody,
    key: KeyInfo,
    extras: Extras,
    roles: Collection[str],
    request_id: str,
) -> CompletionRequested:
    """The request booked to the key's user, team and project: the gateway is trusted, so what
    it publishes is booked as it says, and a body has no say in it. OpenAI's `user` is kept as
    metadata only."""
    target = {"role": body.model} if body.model in roles else {"model": body.model}
    metadata: dict[str, Any] = {"key_id": key.key_id}
    if body.user:
        metadata["openai_user"] = body.user
    fields = {
        "request_id": request_id,
        "user_id": key.user_id, "team_id": key.team_id, "project_id": key.project_id,
        "conversation_id": extras.conversation_id, "workflow_id": extras.workflow_id,
        "messages": [message(i, sent) for i, sent in enumerate(body.messages)],
        "params": params(body), "metadata": metadata, "tags": list(extras.tags),
        "stream": body.stream, **target,
    }  # fmt: skip
    try:
        return CompletionRequested.model_validate(fields)
    except ValidationError as exc:
        if too_large(exc):
            raise TooLargeError(describe(exc)) from None
        raise BodyError(describe(exc)) from None


def chat_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage_object(usage: TokenUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_object(received: CompletionReceived, created: int) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": received.content, "refusal": None},
        "logprobs": None,
        "finish_reason": received.finish_reason or "stop",
    }
    return {
        "id": chat_id(received.request_id), "object": "chat.completion", "created": created,
        "model": received.model, "choices": [choice], "usage": usage_object(received.usage),
        "system_fingerprint": None,
    }  # fmt: skip


class ChunkObjects:
    """The OpenAI chunks of one stream: the role first, then each delta, then one with the
    finish reason and, when the body asked for it, one with the usage and no choices."""

    def __init__(self, request_id: str, model: str, created: int, include_usage: bool) -> None:
        self.id = chat_id(request_id)
        self.model = model  # the name asked for, until the final chunk says who answered
        self.created = created
        self.include_usage = include_usage

    def _chunk(
        self, choices: list[dict[str, Any]], usage: TokenUsage | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": None, "choices": choices,
        }  # fmt: skip
        if self.include_usage:
            chunk["usage"] = usage_object(usage) if usage is not None else None
        return chunk

    def _choice(self, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def opening(self) -> dict[str, Any]:
        return self._chunk([self._choice({"role": "assistant", "content": ""})])

    def content(self, text: str) -> dict[str, Any]:
        return self._chunk([self._choice({"content": text})])

    def closing(self, final: CompletionChunk) -> list[dict[str, Any]]:
        self.model = final.model or self.model
        chunks = [self._chunk([self._choice({}, final.finish_reason or "stop")])]
        if self.include_usage and final.usage is not None:
            chunks.append(self._chunk([], final.usage))
        return chunks


def owner(target: str) -> str:
    """The provider part of a litellm name (openai/gpt-4o-mini: openai)."""
    return target.split("/", 1)[0] if "/" in target else "llmbus"


def model_list(settings: Settings, created: int) -> dict[str, Any]:
    """The catalog's models (the configured ones, then the built-in ones) and the roles."""
    owners = {entry.name: owner(entry.target) for entry in settings.models}
    for name in BUILTIN_MODELS:
        owners.setdefault(name, owner(name))
    listed = [*owners.items(), *((role, ROLE_OWNER) for role in settings.roles)]
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": owned_by}
        for name, owned_by in listed
    ]
    return {"object": "list", "data": data}
