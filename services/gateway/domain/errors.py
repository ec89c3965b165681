"""llmbus's errors as OpenAI's: an HTTP status and `{"error": {"message", "type", "param",
"code"}}`. The code is llmbus's own error type, so a caller can tell a budget refusal from a
rate limit, and the type is OpenAI's word for the status."""

from dataclasses import dataclass
from typing import Any

from llmbus.shared.contracts.completion import CompletionFailed, ErrorType
from llmbus.shared.errors import LlmbusError, ReplyErrorType

# How a request ended in CompletionFailed, as a status: every ErrorType (a unit test checks).
FAILURE_STATUS: dict[str, int] = {
    ErrorType.malformed_json: 400,
    ErrorType.invalid_request: 400,
    ErrorType.unknown_model: 404,
    ErrorType.authentication: 502,  # the provider refused llmbus's key, not the caller's
    ErrorType.rate_limited: 429,
    ErrorType.provider_error: 502,
    ErrorType.timeout: 504,
    ErrorType.context_window_exceeded: 400,
    ErrorType.content_filtered: 400,
    ErrorType.bad_request: 400,
    ErrorType.budget_exceeded: 402,
    ErrorType.prompt_not_found: 404,
    ErrorType.prompt_inactive: 409,
    ErrorType.invalid_variables: 400,
    ErrorType.prompt_unavailable: 503,
    ErrorType.too_large: 413,
    ErrorType.no_capable_model: 400,
    ErrorType.cancelled: 409,  # by someone else (`llmbus cancel`): the caller is still here
    ErrorType.request_conflict: 409,
    ErrorType.forbidden: 403,
    ErrorType.internal: 500,
}
# How a request/reply call (a key check) or an llmbus error ended: every ReplyErrorType.
REPLY_STATUS: dict[str, int] = {
    ReplyErrorType.invalid_request: 400,
    ReplyErrorType.too_large: 413,
    ReplyErrorType.not_found: 404,
    ReplyErrorType.duplicate_key: 409,
    ReplyErrorType.prompt_inactive: 409,
    ReplyErrorType.invalid_variables: 400,
    ReplyErrorType.store_busy: 503,
    ReplyErrorType.unavailable: 503,
    ReplyErrorType.forbidden: 403,
    ReplyErrorType.unauthorized: 401,
    ReplyErrorType.request_conflict: 409,
    ReplyErrorType.internal: 500,
}
KINDS = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout",
}
# a failure the same request may well get past a moment later, where no other pause is known
RETRY_SOON_S = 1


@dataclass(frozen=True)
class HttpFailure:
    status: int
    code: str
    message: str
    param: str | None = None
    retry_after_s: int | None = None

    @property
    def kind(self) -> str:
        default = "invalid_request_error" if self.status < 500 else "server_error"
        return KINDS.get(self.status, default)

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


def failure(failed: CompletionFailed, rate_limit_pause_s: int) -> HttpFailure:
    """A CompletionFailed; a rate limit says when to try again: when the worker stops passing
    over the model (completion.cooldown_s)."""
    code = failed.error_type.value
    status = FAILURE_STATUS.get(code, 500)
    retry_after = rate_limit_pause_s if status == 429 else None
    if failed.error_type is ErrorType.no_capable_model and failed.retryable:
        # every candidate is cooling down after a rate limit: the same request serves later
        status, retry_after = 503, rate_limit_pause_s
    elif status >= 500 and failed.retryable:
        retry_after = RETRY_SOON_S
    return HttpFailure(status, code, failed.message, retry_after_s=retry_after)


def error(exc: LlmbusError) -> HttpFailure:
    """An llmbus error (the SDK's RequestError included: its error_type is the reply's)."""
    code = str(exc.error_type)
    status = REPLY_STATUS.get(code, 500)
    message = getattr(exc, "message", None) or str(exc)
    retry_after = RETRY_SOON_S if status == 503 else None
    return HttpFailure(status, code, message, getattr(exc, "param", None), retry_after)


def unavailable(message: str) -> HttpFailure:
    """NATS or a service did not answer: another try, or another gateway, may get through."""
    return HttpFailure(503, ReplyErrorType.unavailable, message, retry_after_s=RETRY_SOON_S)


def timed_out(request_id: str, seconds: float) -> HttpFailure:
    message = f"no answer to request {request_id} within {seconds:g} s; it was cancelled"
    return HttpFailure(504, ErrorType.timeout, message)


def body_too_large(limit: int) -> HttpFailure:
    message = f"the body is larger than {limit} bytes (gateway.max_body_bytes)"
    return HttpFailure(413, ErrorType.too_large, message)


def internal(request_id: str | None) -> HttpFailure:
    about = f" (request {request_id})" if request_id else ""
    return HttpFailure(500, ErrorType.internal, f"internal error in the gateway{about}")


def no_route(status: int) -> HttpFailure:
    if status == 404:
        return HttpFailure(404, ReplyErrorType.not_found, "no such endpoint")
    return HttpFailure(status, "method_not_allowed", "this endpoint takes another method")
