"""The Conversation aggregate: one user's chat, its turns and the completions that answered them.

A user turn sent to a model carries a request id and stays pending until the completion's
outcome is recorded; recording an outcome twice changes nothing. The turn's event stores what
the request adds to the conversation (model, params, how the history was trimmed), never the
history again. Deleting is soft: a deleted conversation, a missing one and another user's one
all read "not found".
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from llmbus.services.conversation.domain.checks import (
    Role,
    check_content,
    check_cost,
    check_count,
    check_metadata,
    check_model,
    check_request,
    check_request_id,
    check_role,
    check_title,
    check_user_id,
)
from llmbus.services.conversation.domain.errors import ConversationError, ConversationNotFound
from llmbus.services.conversation.domain.history import without_oldest

# Stored events name their class by these topics, fixed where the module first lived: a store
# written before the module moved reads back, and the next move needs no migration.
STORED_TOPIC = "llmbus.services.conversation.conversation:Conversation"
FIRST_TURN_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:conversation:first-turn")


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
    TOPIC = STORED_TOPIC

    class ConversationCreated(Aggregate.Created):
        TOPIC = f"{STORED_TOPIC}.ConversationCreated"
        user_id: str
        title: str
        metadata: dict[str, Any]
        model: str | None

    class Created(Aggregate.Created):
        """Never stored: with explicit topics, eventsourcing wants Aggregate's Created declared."""

        TOPIC = f"{STORED_TOPIC}.Created"

    class MessageAdded(Aggregate.Event):
        """A turn; with a `request`, the completion request the outbox publishes for it."""

        TOPIC = f"{STORED_TOPIC}.MessageAdded"
        role: Role
        content: str
        request_id: str | None
        request: dict[str, Any] | None

    @staticmethod
    def first_turn_id(user_id: str, request_id: str) -> UUID:
        """The id of a conversation started by its first turn: a re-sent first turn finds the
        conversation it started instead of starting another."""
        return uuid5(FIRST_TURN_NAMESPACE, json.dumps([user_id, request_id]))

    @classmethod
    def start(
        cls,
        user_id: str,
        title: str,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
        conversation_id: UUID | None = None,
    ) -> "Conversation":
        check_user_id(user_id)
        title, data, model = check_title(title), check_metadata(metadata), check_model(model)
        if system is not None:
            check_content(system)
        conversation = cls(
            id=conversation_id or uuid4(), user_id=user_id, title=title, metadata=data, model=model
        )
        if system is not None:
            conversation.add_message("system", system)
        return conversation

    @event(ConversationCreated)
    def __init__(
        self, id: UUID, user_id: str, title: str, metadata: dict[str, Any], model: str | None
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

    @event("ConversationRenamed", topic=f"{STORED_TOPIC}.ConversationRenamed")
    def _rename(self, title: str, timestamp: datetime | None = None) -> None:
        self.title = title
        self.last_activity_at = _at(timestamp)

    @event("ConversationDeleted", topic=f"{STORED_TOPIC}.ConversationDeleted")
    def _delete(self) -> None:
        self.deleted = True
        self.pending = set()

    @event(MessageAdded)
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

    @event("CompletionReceived", topic=f"{STORED_TOPIC}.CompletionReceived")
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

    @event("CompletionFailed", topic=f"{STORED_TOPIC}.CompletionFailed")
    def _fail(
        self, request_id: str, error_type: str, message: str, timestamp: datetime | None = None
    ) -> None:
        at = _at(timestamp)
        self.failures.append(
            {"request_id": request_id, "error_type": error_type, "message": message, "at": at}
        )
        self._settle(request_id, at)

    @event("HistoryTrimmed", topic=f"{STORED_TOPIC}.HistoryTrimmed")
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


def _at(timestamp: datetime | None) -> datetime:
    assert timestamp is not None, "eventsourcing passes the event's timestamp"
    return timestamp
