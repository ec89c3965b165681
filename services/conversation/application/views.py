"""What a get or a list answers: conversations and prompts as their reply contracts show them."""

from typing import Any

from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.domain.errors import PromptError
from llmbus.services.conversation.domain.prompt import ManagedPrompt
from llmbus.services.conversation.domain.prompt_checks import LABELS
from llmbus.services.conversation.domain.prompt_version import PromptVersion
from llmbus.shared.contracts.conversation import (
    ChatReply,
    ConversationSummary,
    ConversationView,
    FailureView,
    TrimView,
    TurnView,
)
from llmbus.shared.contracts.prompt import PromptSummary, PromptView
from llmbus.shared.prompts.library import DomainPrompt

DOMAIN_AUTHOR = "llmbus"


def turn_view(turn: Any) -> TurnView:
    return TurnView(
        role=turn.role, content=turn.content, request_id=turn.request_id, at=turn.at,
        model=turn.model, prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens, cost_usd=turn.cost_usd,
        finish_reason=getattr(turn, "finish_reason", None),
    )  # fmt: skip


def conversation_summary(conversation: Conversation) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=str(conversation.id), user_id=conversation.user_id,
        title=conversation.title, model=conversation.model, created_at=conversation.created_at,
        last_activity_at=conversation.last_activity_at, message_count=len(conversation.messages),
        total_cost_usd=conversation.total_cost_usd, deleted=conversation.deleted,
    )  # fmt: skip


def conversation_view(conversation: Conversation) -> ConversationView:
    return ConversationView(
        **conversation_summary(conversation).model_dump(),
        metadata=conversation.metadata,
        messages=[turn_view(t) for t in conversation.messages],
        pending=sorted(conversation.pending),
        failures=[FailureView.model_validate(f) for f in conversation.failures],
        trims=[TrimView.model_validate(t) for t in conversation.trims],
        total_tokens=conversation.total_tokens,
    )


def prompt_view(
    prompt: ManagedPrompt | DomainPrompt, label: str | None = None, version: int | None = None
) -> PromptView:
    if isinstance(prompt, DomainPrompt):
        check_domain_selector(prompt, label, version)
        return PromptView(
            key=prompt.key, source="domain", active=True, version=prompt.version,
            name=prompt.name, description=prompt.description, template=prompt.template,
            variables=list(prompt.variables), labels=domain_labels(prompt),
            latest_version=prompt.version, author=DOMAIN_AUTHOR, created_at=None,
        )  # fmt: skip
    chosen: PromptVersion = prompt.resolve(label, version)
    return PromptView(
        key=prompt.key, source="managed", active=prompt.active, version=chosen.number,
        name=chosen.name, description=chosen.description, template=chosen.template,
        variables=list(chosen.variables), labels=dict(prompt.labels),
        latest_version=prompt.latest.number, author=chosen.author, note=chosen.note,
        created_at=chosen.created_at, team_id=prompt.team_id,
    )  # fmt: skip


def prompt_summary(prompt: ManagedPrompt | DomainPrompt) -> PromptSummary:
    if isinstance(prompt, DomainPrompt):
        return PromptSummary(
            key=prompt.key, source="domain", active=True, name=prompt.name,
            description=prompt.description, latest_version=prompt.version,
            labels=domain_labels(prompt),
        )  # fmt: skip
    history = prompt.history()
    return PromptSummary(
        key=prompt.key, source="managed", active=prompt.active, name=prompt.name,
        description=prompt.description, latest_version=prompt.latest.number,
        labels=dict(prompt.labels), updated_at=history[-1]["at"] if history else None,
    )  # fmt: skip


def domain_labels(prompt: DomainPrompt) -> dict[str, int]:
    return {label: prompt.version for label in LABELS}


def check_domain_selector(prompt: DomainPrompt, label: str | None, version: int | None) -> None:
    """A domain prompt has one version, and every label points at it."""
    if label is not None and version is not None:
        raise PromptError("give a label or a version, not both")
    if label is not None and label not in LABELS:
        raise PromptError(f"unknown label {label!r}; labels are {', '.join(LABELS)}")
    if version is not None and version != prompt.version:
        raise PromptError(f"prompt {prompt.key!r} has no version {version}")


def chat_reply(conversation: Conversation, request_id: str) -> ChatReply:
    trimmed = sum(t["dropped"] for t in conversation.trims if t["request_id"] == request_id)
    ids = {"request_id": request_id, "conversation_id": str(conversation.id), "trimmed": trimmed}
    answer = next(
        (t for t in conversation.messages if t.role == "assistant" and t.request_id == request_id),
        None,
    )
    if answer is not None:
        return ChatReply(
            status="completed", message=turn_view(answer), prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, cost_usd=answer.cost_usd, **ids,
        )  # fmt: skip
    failure = next((f for f in conversation.failures if f["request_id"] == request_id), None)
    if failure is not None:
        return ChatReply(
            status="failed", error_type=failure["error_type"], error=failure["message"], **ids
        )
    return ChatReply(status="pending", **ids)
