"""A chat turn's completion request: how it is fitted to the model, checked, stored and rebuilt.

A turn stores only what its request adds to the conversation (model, params, how many of the
oldest turns it leaves out); the outbox rebuilds the whole request from the conversation read
back at the turn's version.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.domain.errors import ConversationError
from llmbus.services.conversation.domain.history import without_oldest
from llmbus.shared.contracts import CompletionFailed, CompletionReceived, CompletionRequested
from llmbus.shared.errors import TooLargeError
from llmbus.shared.limits import Limits, encoded_size

Messages = list[dict[str, str]]
Outcome = CompletionReceived | CompletionFailed
TITLE_CHARS = 60  # of the first message, for a conversation its first turn starts untitled


@dataclass(frozen=True)
class Fit:
    """The history a model is sent, and how many of the oldest turns were left out of it.

    Only the oldest turns other than system messages may be left out, as `trim_history` does:
    a stored turn records `dropped` alone, and its messages are read back from that.
    """

    messages: Messages
    dropped: int = 0
    context_window: int = 0


# model, history with the new turn, max_tokens -> what fits the model's context window
Fitter = Callable[[str, Messages, int | None], Fit]


@dataclass(frozen=True)
class NewConversation:
    """A send that names no conversation starts one with its turn, in the same save."""

    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    system: str | None = None

    def title_for(self, content: str) -> str:
        """The title given, else the first line of the first message, shortened."""
        if self.title is not None:
            return self.title
        first = next((line.strip() for line in content.splitlines() if line.strip()), "")
        first = " ".join(first.split())
        return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class TurnRequest:
    """What a send asks for, besides where: checked on the conversation by `add_turn`."""

    content: str
    request_id: str
    model: str | None
    params: dict[str, Any]
    fit: Fitter
    limits: Limits
    default_model: str | None = None
    stream: bool = False  # the request publishes its chunks as they come
    sent_by: str | None = None  # the client that sent the turn: its chunks, status, cancel


def add_turn(conversation: Conversation, turn: TurnRequest) -> None:
    """Add the user's turn with the completion request it starts; a request id sent before
    adds nothing. Refused, with nothing added, when no model answers or the request would not
    fit the limits (the outbox could not publish it)."""
    if conversation.has_request(turn.request_id):
        conversation.add_message("user", turn.content, turn.request_id)  # a retry: checked, no-op
        return
    model = turn.model or conversation.model or turn.default_model
    if model is None:
        raise ConversationError(
            "no model to answer with: name one in the send, on the conversation, or as "
            "conversation.default_model in the configuration"
        )
    history = [*conversation.history(), {"role": "user", "content": turn.content}]
    fitted = turn.fit(model, history, turn.params.get("max_tokens"))
    if without_oldest(history, fitted.dropped) != fitted.messages:
        raise RuntimeError(
            "a fitted history must be the whole history less its oldest turns other than "
            "system messages, as trim_history keeps it"
        )
    # validated now, so the request the outbox rebuilds from the turn is a valid one
    request = completion_request(
        conversation, turn.request_id, model, fitted.messages, turn.params, turn.stream,
        turn.sent_by,
    )  # fmt: skip
    check_fits(request, len(fitted.messages) - 1, turn.limits)
    stored = {"model": model, "params": request["params"], "dropped": fitted.dropped}
    if turn.stream:
        stored["stream"] = True  # only then: a turn stored before streamed turns reads the same
    if turn.sent_by is not None:
        stored["sent_by"] = turn.sent_by
    conversation.add_message("user", turn.content, turn.request_id, request=stored)
    if fitted.dropped:
        conversation.record_trim(
            turn.request_id, fitted.dropped, len(fitted.messages), fitted.context_window
        )


def completion_request(
    conversation: Conversation,
    request_id: str,
    model: str,
    messages: Messages,
    params: dict[str, Any],
    stream: bool = False,
    sent_by: str | None = None,
) -> dict[str, Any]:
    """The CompletionRequested of a chat turn, as published (JSON-ready)."""
    return CompletionRequested.model_validate(
        {"request_id": request_id, "model": model, "messages": messages,
         "conversation_id": str(conversation.id), "user_id": conversation.user_id,
         "params": params, "stream": stream, "sent_by": sent_by}
    ).model_dump(mode="json", exclude_none=True)  # fmt: skip


def check_fits(request: dict[str, Any], history: int, limits: Limits) -> None:
    """The outbox publishes a turn's request as this JSON: it must fit, headers included."""
    size = encoded_size(request)
    if size > limits.request_bytes:
        raise TooLargeError(
            f"this turn's request to the model (the message and {history} earlier messages of "
            f"the conversation) encodes to {size} bytes; {limits.request_limit_text()}. Send a "
            "shorter message, or start a new conversation"
        )


def sent_request(
    conversation: Conversation, request_id: str, stored: dict[str, Any]
) -> dict[str, Any]:
    """The CompletionRequested a stored turn starts, from the compact `request` on its
    MessageAdded (model, params, dropped) and the conversation read back at that event's
    version, where the turn is the newest message."""
    newest = conversation.messages[-1] if conversation.messages else None
    if newest is None or newest.request_id != request_id or newest.role != "user":
        raise ValueError(f"turn {request_id} is not the newest of the conversation as read")
    messages = conversation.sent_messages(stored["dropped"])
    return completion_request(
        conversation, request_id, stored["model"], messages, stored["params"],
        stored.get("stream", False), stored.get("sent_by"),
    )  # fmt: skip


def apply_outcome(conversation: Conversation, outcome: Outcome) -> bool:
    """Record the outcome on the conversation; False if it was already recorded."""
    before = len(conversation.pending_events)
    if isinstance(outcome, CompletionReceived):
        conversation.receive_completion(
            outcome.request_id, outcome.content, outcome.model, outcome.usage.prompt_tokens,
            outcome.usage.completion_tokens, outcome.cost_usd, outcome.finish_reason,
        )  # fmt: skip
    else:
        conversation.fail_completion(outcome.request_id, outcome.error_type.value, outcome.message)
    return len(conversation.pending_events) > before
