"""How a failed provider call reads: its ErrorType, whether to retry it, after how long, and a
message safe to store (no keys, no litellm noise)."""

import random
import re
from collections.abc import Iterable

import litellm

from llmbus.services.completion.answer import ModelReply
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.errors import LlmbusError
from llmbus.shared.secrets import scrub

RETRYABLE = frozenset({ErrorType.rate_limited, ErrorType.timeout, ErrorType.provider_error})
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# A provider asking for a longer pause than this is better served by redelivery later.
MAX_RETRY_AFTER_S = 60.0
MAX_MESSAGE_CHARS = 500

LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?")
LITELLM_RETRIED = re.compile(r"\s*LiteLLM Retried: \d+ times?.*$", re.DOTALL)


class ModelCallFailed(LlmbusError):
    error_type: ErrorType  # a completion's error type, not an ErrorReply's

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        retryable: bool,
        provider: str | None = None,
        latency_ms: float = 0.0,
        retry_after_s: float | None = None,
        partial: ModelReply | None = None,
    ) -> None:
        super().__init__(f"{error_type}: {message}")
        # what a stream delivered before it broke off or was cancelled: charged as it was
        self.partial = partial
        self.retry_after_s = retry_after_s  # what the provider asked for, if it did
        self.error_type = error_type
        self.message = message
        self.retryable = retryable
        self.provider = provider
        self.latency_ms = latency_ms


def provider_detail(exc: BaseException, keys: Iterable[str | None]) -> str:
    # str(exc) is litellm's message with the provider's body in it; the response headers are
    # not (they stay on exc.litellm_response_headers, read only for retry-after).
    text = LITELLM_RETRIED.sub("", LITELLM_PREFIX.sub("", str(exc).strip()))
    text = scrub(text, keys)
    text = text or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def names_unknown_model(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("llm provider not provided", "model not found", "model_not_found")
    )


def classify(exc: BaseException) -> ErrorType:
    # Order matters: litellm's subclasses (ContextWindowExceeded < BadRequest) come first.
    if isinstance(exc, litellm.Timeout):
        return ErrorType.timeout
    if isinstance(exc, litellm.RateLimitError):
        return ErrorType.rate_limited
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return ErrorType.authentication
    if isinstance(exc, litellm.NotFoundError):
        return ErrorType.unknown_model
    if isinstance(exc, litellm.ContextWindowExceededError):
        return ErrorType.context_window_exceeded
    if isinstance(exc, litellm.ContentPolicyViolationError):
        return ErrorType.content_filtered
    if isinstance(exc, litellm.BadRequestError | litellm.UnprocessableEntityError):
        return ErrorType.unknown_model if names_unknown_model(exc) else ErrorType.bad_request
    if isinstance(
        exc,
        litellm.InternalServerError
        | litellm.ServiceUnavailableError
        | litellm.BadGatewayError
        | litellm.APIConnectionError,
    ):
        return ErrorType.provider_error
    if isinstance(exc, litellm.APIError):
        return ErrorType.provider_error
    return ErrorType.internal


def is_retryable(error_type: ErrorType, exc: BaseException) -> bool:
    if error_type is ErrorType.provider_error and isinstance(exc, litellm.APIError):
        # A bare APIError is retried only when the provider said 5xx (or gave no status).
        status = status_of(exc)
        return status is None or status >= 500
    return error_type in RETRYABLE


def retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def backoff_s(attempt: int, exc: BaseException) -> float | None:
    # None: the provider asked for a longer pause than is worth holding a worker slot for.
    asked = retry_after_s(exc)
    if asked is not None:
        return asked if asked <= MAX_RETRY_AFTER_S else None
    return min(FIRST_BACKOFF_S * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.75, 1.0)


def cancelled(partial: ModelReply | None) -> ModelCallFailed:
    return ModelCallFailed(
        ErrorType.cancelled,
        "cancelled (llmbus.completion.cancel)"
        + ("; what was generated before is charged" if partial is not None else ""),
        retryable=False,
        provider=partial.provider if partial is not None else None,
        latency_ms=partial.latency_ms if partial is not None else 0.0,
        partial=partial,
    )
