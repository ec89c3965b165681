"""The Conversation aggregate: one user's chat, its turns and the completions that answered them.

A user turn sent to a model carries a request id and stays pending until the completion's
outcome is recorded; recording an outcome twice changes nothing. The turn's event stores what
the request adds to the conversation (model, params, how the history was trimmed), never the
history again. Deleting is soft: a deleted conversation, a missing one and another user's one
all read "not found".
"""

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from eventsourcing.domain import Aggregate, event

from llmbus.shared.errors import InvalidRequestError, NotFoundError

Role = Literal["user", "assistant", "system"]
ROLES: tuple[Role, ...] = ("user", "assistant", "system")
MAX_TITLE = 200
MAX_USER_ID = 200
# what a turn's MessageAdded stores of the request it starts; the messages are read back
REQUEST_FIELDS = ("model", "params", "dropped")


class ConversationError(InvalidRequestError):
    """A conversation command with bad input; the message says what is wrong."""


class ConversationNotFound(NotFoundError):
    """Missing, deleted or someone else's: the same message, so ids cannot be probed.

    Takes the conversation id, or a whole message.
    """

    def __init__(self, conversation_id: object) -> None:
        text = str(conversation_id)
        super().__init__(text if " " in text else f"conversation {text} not found")


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str | None  # None: the reply was recorded in metadata-only privacy mode
    request_id: str | None
    at: datetime
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None


class Conversation(Aggregate):
    @classmethod
    def start(
        cls,
        user_id: str,
        title: str,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> "Conversation":
        check_user_id(user_id)
        title, data, model = check_title(title), check_metadata(metadata), check_model(model)
        if system is not None:
            check_content(system)
        conversation = cls(user_id=user_id, title=title, metadata=data, model=model)
        if system is not None:
            conversation.add_message("system", system)
        return conversation

    @event("ConversationCreated")
    def __init__(
        self, user_id: str, title: str, metadata: dict[str, Any], model: str | None
    ) -> None:
        self.user_id = user_id
        self.title = title
        self.metadata = metadata
        self.model = model
        self.created_at = self.created_on
        self.last_activity_at = self.created_on
        self.deleted = False
        self.messages: list[Turn] = []
        self.pending: set[str] = set()
        self.failures: list[dict[str, Any]] = []
        self.trims: list[dict[str, Any]] = []
        self._requests: dict[str, Turn] = {}  # request id -> the user turn that sent it
        self._outcomes: set[str] = set()

    # Commands

    def check_owner(self, user_id: str) -> None:
        if self.deleted or user_id != self.user_id:
            raise ConversationNotFound(self.id)

    def rename(self, title: str) -> None:
        self._check_open()
        title = check_title(title)
        if title != self.title:
            self._rename(title)

    def delete(self) -> None:
        self._check_open()
        self._delete()

    def add_message(
        self,
        role: str,
        content: str,
        request_id: str | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        """Adds a turn. `request` (a user turn with a request id only) describes the completion
        request it starts, for the outbox to publish: its `model`, its `params`, and `dropped`,
        how many of the oldest turns other than system messages were left out of the history it
        sends (see `trim_history`). The history itself is not stored again: it is this
        conversation's, read back at this turn (`sent_messages`), so the event stays the same
        size however long the conversation grows."""
        self._check_open()
        checked_role = check_role(role)
        check_content(content)
        if request_id is not None:
            check_request_id(request_id)
            sent = self._requests.get(request_id)
            if sent is not None:
                if (sent.role, sent.content) != (checked_role, content):
                    raise ConversationError(
                        f"request {request_id!r} was already sent with another message"
                    )
                return  # a retried send
        if request is not None and (checked_role != "user" or request_id is None):
            raise ConversationError("only a user message with a request id starts a request")
        checked = None if request is None else check_request(request, self._droppable())
        self._add_message(checked_role, content, request_id, checked)

    def receive_completion(
        self,
        request_id: str,
        content: str | None,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        finish_reason: str | None,
    ) -> None:
        if self.deleted or request_id in self._outcomes:
            return
        check_request_id(request_id)
        if content is not None and not isinstance(content, str):
            raise ConversationError("completion content must be text or None")
        self._receive(
            request_id, content, model,
            check_count("prompt_tokens", prompt_tokens),
            check_count("completion_tokens", completion_tokens),
            check_cost(cost_usd), finish_reason,
        )  # fmt: skip

    def fail_completion(self, request_id: str, error_type: str, message: str) -> None:
        if self.deleted or request_id in self._outcomes:
            return
        check_request_id(request_id)
        self._fail(request_id, str(error_type), str(message))

    def record_trim(self, request_id: str, dropped: int, kept: int, context_window: int) -> None:
        check_request_id(request_id)
        self._trim(
            request_id,
            check_count("dropped", dropped),
            check_count("kept", kept),
            check_count("context_window", context_window),
        )

    # Queries

    def history(self) -> list[dict[str, str]]:
        """The turns to send a model, in order; replies kept without their text are left out."""
        return [{"role": t.role, "content": t.content} for t in self.messages if t.content]

    def sent_messages(self, dropped: int) -> list[dict[str, str]]:
        """The messages the newest turn's request sends: the history less the `dropped` oldest
        turns other than system messages. Read on the conversation as it was right after that
        turn (the repository's `get` at the MessageAdded's version)."""
        return without_oldest(self.history(), dropped)

    def answer(self, request_id: str) -> Turn | None:
        """The assistant turn that answered a request, once recorded."""
        for turn in reversed(self.messages):
            if turn.role == "assistant" and turn.request_id == request_id:
                return turn
        return None

    def failure(self, request_id: str) -> dict[str, Any] | None:
        return next((f for f in self.failures if f["request_id"] == request_id), None)

    def has_request(self, request_id: str) -> bool:
        return request_id in self._requests

    @property
    def total_cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.messages)

    @property
    def total_tokens(self) -> int:
        return sum(t.prompt_tokens + t.completion_tokens for t in self.messages)

    # Events

    @event("ConversationRenamed")
    def _rename(self, title: str, timestamp: datetime | None = None) -> None:
        self.title = title
        self.last_activity_at = _at(timestamp)

    @event("ConversationDeleted")
    def _delete(self) -> None:
        self.deleted = True
        self.pending = set()

    @event("MessageAdded")
    def _add_message(
        self,
        role: Role,
        content: str,
        request_id: str | None,
        request: dict[str, Any] | None,
        timestamp: datetime | None = None,
    ) -> None:
        turn = Turn(role=role, content=content, request_id=request_id, at=_at(timestamp))
        self.messages.append(turn)
        if request_id is not None:
            self._requests[request_id] = turn
            if role == "user":
                self.pending.add(request_id)
        self.last_activity_at = turn.at

    @event("CompletionReceived")
    def _receive(
        self,
        request_id: str,
        content: str | None,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        finish_reason: str | None,
        timestamp: datetime | None = None,
    ) -> None:
        turn = Turn(
            role="assistant", content=content, request_id=request_id, at=_at(timestamp),
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cost_usd=cost_usd, finish_reason=finish_reason,
        )  # fmt: skip
        self.messages.append(turn)
        self._settle(request_id, turn.at)

    @event("CompletionFailed")
    def _fail(
        self, request_id: str, error_type: str, message: str, timestamp: datetime | None = None
    ) -> None:
        at = _at(timestamp)
        self.failures.append(
            {"request_id": request_id, "error_type": error_type, "message": message, "at": at}
        )
        self._settle(request_id, at)

    @event("HistoryTrimmed")
    def _trim(
        self,
        request_id: str,
        dropped: int,
        kept: int,
        context_window: int,
        timestamp: datetime | None = None,
    ) -> None:
        self.trims.append(
            {"request_id": request_id, "dropped": dropped, "kept": kept,
             "context_window": context_window, "at": _at(timestamp)}
        )  # fmt: skip

    def _settle(self, request_id: str, at: datetime) -> None:
        self.pending.discard(request_id)
        self._outcomes.add(request_id)
        self.last_activity_at = at

    def _check_open(self) -> None:
        if self.deleted:
            raise ConversationNotFound(self.id)

    def _droppable(self) -> int:
        """How many turns a request started now may leave out: all but system messages (the
        new turn, which is not among them yet, always stays)."""
        return sum(1 for m in self.history() if m["role"] != "system")


def trim_history(
    messages: list[dict[str, str]],
    count_tokens: Callable[[list[dict[str, str]]], int],
    limit: int,
) -> tuple[list[dict[str, str]], int]:
    """Drops the oldest turns until the history fits `limit` tokens.

    System messages and the last message always stay, even if they alone do not fit. A trimmed
    history never opens on an assistant turn: some providers refuse one. Only the oldest turns
    other than system messages go, so the history kept is `without_oldest(messages, dropped)`.
    """
    kept = list(messages)
    dropped = 0
    while count_tokens(kept) > limit:
        oldest = _oldest_droppable(kept)
        if oldest is None:
            break
        del kept[oldest]
        dropped += 1
    if dropped:
        oldest = _oldest_droppable(kept)
        while oldest is not None and kept[oldest]["role"] == "assistant":
            del kept[oldest]
            dropped += 1
            oldest = _oldest_droppable(kept)
    return kept, dropped


def without_oldest(messages: list[dict[str, str]], dropped: int) -> list[dict[str, str]]:
    """`messages` less the `dropped` oldest turns other than system messages.

    `trim_history` only ever drops the oldest such turn, so what it keeps is exactly
    `without_oldest(messages, dropped)` with the `dropped` it returns: that number is all a
    stored turn needs to say how its history was trimmed.
    """
    kept: list[dict[str, str]] = []
    for message in messages:
        if dropped > 0 and message["role"] != "system":
            dropped -= 1
        else:
            kept.append(message)
    return kept


def _oldest_droppable(messages: list[dict[str, str]]) -> int | None:
    last = len(messages) - 1
    return next(
        (i for i, m in enumerate(messages) if i < last and m["role"] != "system"),
        None,
    )


def check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ConversationError("user_id must not be empty")
    if len(user_id) > MAX_USER_ID:
        raise ConversationError(f"user_id must be at most {MAX_USER_ID} characters")


def check_title(title: str) -> str:
    stripped = title.strip() if isinstance(title, str) else ""
    if not 1 <= len(stripped) <= MAX_TITLE:
        raise ConversationError(f"title must be 1-{MAX_TITLE} characters, got {len(stripped)}")
    return stripped


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConversationError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    if not all(isinstance(key, str) for key in metadata):
        raise ConversationError("metadata keys must be strings")
    try:
        # a round trip through JSON stores exactly what a reader will get back
        normal: dict[str, Any] = json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConversationError(f"metadata must be JSON-serialisable: {e}") from None
    return normal


def check_model(model: str | None) -> str | None:
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConversationError("model must be a non-empty model name")
    return model


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ConversationError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def check_content(content: str) -> None:
    if not isinstance(content, str) or not content.strip():
        raise ConversationError("message content must not be empty")


def check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not request_id.strip():
        raise ConversationError("request_id must not be empty")


def check_request(request: Mapping[str, Any], droppable: int) -> dict[str, Any]:
    """A turn's request: its model, its params and how many of the oldest turns it leaves out,
    at most `droppable`. Nothing else: in particular not the messages, which are derived."""
    if not isinstance(request, Mapping) or set(request) != set(REQUEST_FIELDS):
        raise ConversationError(f"request must hold exactly {', '.join(REQUEST_FIELDS)}")
    model, params, dropped = (request[field] for field in REQUEST_FIELDS)
    if not isinstance(model, str) or not model.strip():
        raise ConversationError("request model must be a non-empty model name")
    if not isinstance(params, Mapping):
        raise ConversationError("request params must be a JSON object")
    check_count("dropped", dropped)
    if dropped > droppable:
        raise ConversationError(
            f"request drops {dropped} turns, but the history has only {droppable} to drop"
        )
    try:
        normal: dict[str, Any] = json.loads(json.dumps(dict(request), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConversationError(f"request must be JSON-serialisable: {e}") from None
    return normal


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConversationError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_cost(cost_usd: float) -> float:
    try:
        cost = float(cost_usd)
    except (TypeError, ValueError):
        raise ConversationError(f"cost_usd must be a number, got {cost_usd!r}") from None
    if not (math.isfinite(cost) and cost >= 0):
        raise ConversationError(f"cost_usd must be a finite, non-negative number, got {cost_usd!r}")
    return cost


def _at(timestamp: datetime | None) -> datetime:
    assert timestamp is not None, "eventsourcing passes the event's timestamp"
    return timestamp
