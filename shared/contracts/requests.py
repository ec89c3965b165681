"""What a caller may learn of, or do to, one request after sending it: its streamed chunks, its
status (llmbus.completion.status) and its cancellation (llmbus.completion.cancel)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from llmbus.shared.contracts.base import Contract, RequestId
from llmbus.shared.contracts.completion import Attempt, TokenUsage


class CompletionChunk(Contract):
    """On core NATS, llmbus.completion.chunk.<request_id>: one per delta, in order, then a final
    chunk (final: true) with the usage and the cost; the terminal event follows on its subject
    (and the caller's reply inbox)."""

    request_id: str
    index: int = Field(description="0, 1, 2, …: the order the deltas came in.")
    delta: str = ""
    finish_reason: str | None = None
    final: bool = False
    model: str | None = Field(default=None, description="On the final chunk: who answered.")
    usage: TokenUsage | None = Field(default=None, description="On the final chunk.")
    cost_usd: float | None = Field(default=None, description="On the final chunk.")
    error_type: str | None = Field(
        default=None, description="On a final chunk of a stream that broke off or was cancelled."
    )
    attempt: int = Field(
        default=1,
        description="The call attempt: a worker that died mid-stream leaves the request to "
        "another, whose stream starts again at index 0 with the next attempt.",
    )


class RequestRef(Contract):
    """llmbus.completion.status and llmbus.completion.cancel take a request_id."""

    request_id: RequestId


Status = Literal["queued", "running", "received", "failed", "unknown"]


class CompletionStatus(Contract):
    request_id: str
    status: Status
    since: datetime | None = Field(
        default=None, description="running: when the worker holding it took it."
    )
    model: str | None = Field(default=None, description="running: the model being called.")
    attempts: list[Attempt] = Field(
        default_factory=list, description="running: the models that failed before this one."
    )
    outcome: dict[str, Any] | None = Field(
        default=None, description="received or failed: the terminal event."
    )
    cancel_requested: bool = False


CancelResult = Literal["cancelled", "cancelling", "already_finished", "unknown"]


class CancelReply(Contract):
    """cancelled: the call was stopped and the request ended (outcome: its CompletionFailed);
    cancelling: it is queued, and ends cancelled with no model call once a worker takes it;
    already_finished: it had ended (outcome: how); unknown: no such request of the caller's."""

    request_id: str
    result: CancelResult
    message: str
    outcome: dict[str, Any] | None = None


class WorkerAsk(Contract):
    """On llmbus.completion.control.<worker>, from the completion service's status and cancel
    handlers to the worker holding a request's call claim."""

    op: Literal["status", "cancel"]
    request_id: str


class WorkerAnswer(Contract):
    """held: false when the worker no longer runs the request (it ended, or never came)."""

    held: bool
    owner: str | None = Field(default=None, description="The client that sent it, if any.")
    since: datetime | None = None
    model: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    outcome: dict[str, Any] | None = Field(default=None, description="cancel: how it ended.")
