"""Conversations over NATS request/reply: llmbus.conversation.* requests and their replies.

Every request names the `user_id` it acts for; a conversation of another user reads exactly as
a missing one (`not_found`). Errors come back as ErrorReply.
"""

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from llmbus.shared.contracts.base import Contract, JsonObject, RequestId
from llmbus.shared.contracts.completion import CompletionParams


class CreateConversation(Contract):
    """The request on llmbus.conversation.create."""

    user_id: str
    title: str = Field(description="1-200 characters once stripped.")
    metadata: JsonObject = Field(
        default_factory=dict, description="Any JSON object, nested at most 32 levels."
    )
    model: str | None = Field(
        default=None, min_length=1, description="The model its turns use unless a send names one."
    )
    system: str | None = Field(default=None, description="An optional first system message.")


class GetConversation(Contract):
    """The request on llmbus.conversation.get."""

    user_id: str
    conversation_id: str


class ListConversations(Contract):
    """The request on llmbus.conversation.list: newest activity first."""

    user_id: str
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")
    limit: int = Field(default=20, ge=1, le=100)


class RenameConversation(Contract):
    """The request on llmbus.conversation.rename."""

    user_id: str
    conversation_id: str
    title: str


class DeleteConversation(Contract):
    """The request on llmbus.conversation.delete: a soft delete, kept as an event."""

    user_id: str
    conversation_id: str


class SendMessage(Contract):
    """The request on llmbus.conversation.send: a user turn, answered by a model.

    Without a conversation_id, the turn starts a conversation (with `title`, `system` and
    `metadata`), stored together with the turn in one save: a turn that is refused leaves no
    conversation. A re-send of its request_id finds the conversation it started.
    """

    user_id: str
    conversation_id: str | None = Field(
        default=None, description="The conversation to add to; absent: start one with this turn."
    )
    content: str
    model: str | None = Field(
        default=None,
        min_length=1,
        description="Defaults to the conversation's model, then conversation.default_model.",
    )
    params: CompletionParams = Field(default_factory=CompletionParams)
    wait: bool = Field(
        default=True,
        description="Answer once the reply (or failure) is stored on the conversation; false: "
        "answer once the turn is stored, with status pending.",
    )
    stream: bool = Field(
        default=False,
        description="Stream the reply: its chunks come on llmbus.completion.chunk.<request_id> "
        "as it is generated, in llmbus's own account (the gateway's console); the turn is "
        "stored as any other.",
    )
    request_id: RequestId | None = Field(
        default=None, description="The idempotency key of this turn; a new one when absent."
    )
    title: str | None = Field(
        default=None,
        description="A new conversation's title (no conversation_id); default: the message's "
        "first line, shortened.",
    )
    system: str | None = Field(
        default=None, description="A new conversation's first system message (no conversation_id)."
    )
    metadata: JsonObject = Field(
        default_factory=dict,
        description="A new conversation's metadata (no conversation_id); nested at most 32 levels.",
    )

    @model_validator(mode="after")
    def _new_conversation_fields_only_without_an_id(self) -> Self:
        if self.conversation_id is not None and (self.title, self.system, self.metadata) != (
            None, None, {},
        ):  # fmt: skip
            raise ValueError(
                "title, system and metadata start a new conversation: send them without "
                "conversation_id"
            )
        return self


class TurnView(Contract):
    role: Literal["user", "assistant", "system"]
    content: str | None = Field(
        description="Null for a reply recorded in metadata-only privacy mode."
    )
    request_id: str | None = None
    at: datetime
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None


class FailureView(Contract):
    request_id: str
    error_type: str
    message: str
    at: datetime


class TrimView(Contract):
    request_id: str
    dropped: int = Field(description="Turns left out of the request sent to the model.")
    kept: int
    context_window: int
    at: datetime


class ConversationSummary(Contract):
    conversation_id: str
    user_id: str
    title: str
    model: str | None = None
    created_at: datetime
    last_activity_at: datetime
    message_count: int
    total_cost_usd: float
    deleted: bool = False


class ConversationView(ConversationSummary):
    metadata: dict[str, Any] = Field(default_factory=dict)
    messages: list[TurnView] = Field(default_factory=list)
    pending: list[str] = Field(
        default_factory=list, description="Request ids sent to a model and not answered yet."
    )
    failures: list[FailureView] = Field(default_factory=list)
    trims: list[TrimView] = Field(default_factory=list)
    total_tokens: int = 0


class ConversationPage(Contract):
    items: list[ConversationSummary]
    next_cursor: str | None = Field(
        description="Pass it as `cursor` for the next page; null: done."
    )


class ChatReply(Contract):
    """The reply on llmbus.conversation.send."""

    request_id: str
    conversation_id: str
    status: Literal["pending", "completed", "failed"]
    message: TurnView | None = Field(default=None, description="The assistant's turn.")
    error_type: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    trimmed: int = Field(
        default=0, description="Oldest turns left out to fit the model's context window."
    )
