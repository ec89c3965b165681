"""The conversation store: conversations and managed prompts, and the listings read from its log.

Commands read get -> change -> save. A save that loses a version race to another conversation
service on the same store is read back and tried again. Listings follow the notification log,
so they are rebuilt at start and see what other processes stored.
"""

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import TopicError, get_topic

from llmbus.services.conversation.conversation import (
    Conversation,
    ConversationError,
    ConversationNotFound,
    without_oldest,
)
from llmbus.services.conversation.prompt import (
    LABELS,
    DuplicatePromptKey,
    ManagedPrompt,
    PromptError,
    PromptNotFound,
    PromptVersion,
)
from llmbus.shared.contracts import CompletionFailed, CompletionReceived, CompletionRequested
from llmbus.shared.contracts.conversation import (
    ConversationPage,
    ConversationSummary,
    ConversationView,
    FailureView,
    TrimView,
    TurnView,
)
from llmbus.shared.contracts.prompt import PromptSummary, PromptView
from llmbus.shared.errors import TooLargeError
from llmbus.shared.eventstore import OutboxApplication
from llmbus.shared.limits import Limits, encoded_size
from llmbus.shared.prompts.library import DOMAIN_PROMPTS, DomainPrompt, domain_prompt

log = logging.getLogger("llmbus.conversation")
ATTEMPTS = 5
CONVERSATION_TOPIC = get_topic(Conversation) + "."
PROMPT_TOPIC = get_topic(ManagedPrompt) + "."
DOMAIN_AUTHOR = "llmbus"
A = TypeVar("A", Conversation, ManagedPrompt)
Messages = list[dict[str, str]]


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
Outcome = CompletionReceived | CompletionFailed


class ConversationApplication(OutboxApplication):
    name = "Conversations"

    # Conversations

    def start(
        self,
        user_id: str,
        title: str,
        metadata: dict[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> Conversation:
        conversation = Conversation.start(user_id, title, metadata, model, system)
        self.save(conversation)
        return conversation

    def conversation(self, user_id: str, conversation_id: str) -> Conversation:
        """The user's conversation; missing, deleted and someone else's all read not found."""
        conversation = self._find_conversation(conversation_id)
        if conversation is None:
            raise not_found(conversation_id)
        conversation.check_owner(user_id)
        return conversation

    def rename(self, user_id: str, conversation_id: str, title: str) -> Conversation:
        return self._change(
            lambda: self.conversation(user_id, conversation_id), lambda c: c.rename(title)
        )

    def delete(self, user_id: str, conversation_id: str) -> Conversation:
        return self._change(
            lambda: self.conversation(user_id, conversation_id), Conversation.delete
        )

    def send(
        self,
        user_id: str,
        conversation_id: str,
        content: str,
        request_id: str,
        model: str | None,
        params: dict[str, Any],
        fit: Fitter,
        limits: Limits,
        default_model: str | None = None,
    ) -> Conversation:
        """Store the user's turn with the completion request it starts (published by the
        outbox); a request id sent before stores nothing new. A turn whose request would not
        fit `limits` is refused: the outbox could not publish it."""
        if not isinstance(content, str) or not content.strip():
            raise ConversationError("message content must not be empty")

        def add_turn(conversation: Conversation) -> None:
            if conversation.has_request(request_id):
                conversation.add_message("user", content, request_id)  # a retry: checked, no-op
                return
            chosen = model or conversation.model or default_model
            if chosen is None:
                raise ConversationError(
                    "no model to answer with: name one in the send, on the conversation, or as "
                    "conversation.default_model in the configuration"
                )
            history = [*conversation.history(), {"role": "user", "content": content}]
            fitted = fit(chosen, history, params.get("max_tokens"))
            if without_oldest(history, fitted.dropped) != fitted.messages:
                raise RuntimeError(
                    "a fitted history must be the whole history less its oldest turns other "
                    "than system messages, as trim_history keeps it"
                )
            # validated now, so the request the outbox rebuilds from the turn is a valid one
            request = completion_request(conversation, request_id, chosen, fitted.messages, params)
            check_fits(request, len(fitted.messages) - 1, limits)
            stored = {"model": chosen, "params": request["params"], "dropped": fitted.dropped}
            conversation.add_message("user", content, request_id, request=stored)
            if fitted.dropped:
                conversation.record_trim(
                    request_id, fitted.dropped, len(fitted.messages), fitted.context_window
                )

        return self._change(lambda: self.conversation(user_id, conversation_id), add_turn)

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[Conversation]:
        """Record each outcome on the conversation whose turn asked for it, once; outcomes of
        requests no conversation sent are left alone. Returns the conversations changed."""
        touched: dict[UUID, Conversation] = {}
        for outcome in outcomes:
            aggregate_id = conversation_uuid(outcome.conversation_id)
            conversation = touched.get(aggregate_id) if aggregate_id else None
            if conversation is None:
                conversation = self._sender(outcome)
            if conversation is None or not conversation.has_request(outcome.request_id):
                continue
            try:
                if apply_outcome(conversation, outcome):
                    touched[conversation.id] = conversation
            except ConversationError as exc:
                # it would fail on every redelivery too: leave it out rather than retry forever
                log.warning("outcome of %s not recorded: %s", outcome.request_id, exc)
        try:
            self.save(*touched.values())
        except IntegrityError:
            # another conversation service changed one of them: one at a time, read back
            return [c for c in (self._record_one(o) for o in outcomes) if c is not None]
        return list(touched.values())

    def _record_one(self, outcome: Outcome) -> Conversation | None:
        for _ in range(ATTEMPTS):
            conversation = self._sender(outcome)
            try:
                if conversation is None or not apply_outcome(conversation, outcome):
                    return None
            except ConversationError as exc:
                log.warning("outcome of %s not recorded: %s", outcome.request_id, exc)
                return None
            try:
                self.save(conversation)
            except IntegrityError:
                continue
            return conversation
        raise RuntimeError(f"could not record the outcome of {outcome.request_id}: busy")

    def _sender(self, outcome: Outcome) -> Conversation | None:
        conversation = self._find_conversation(outcome.conversation_id or "")
        if conversation is None or not conversation.has_request(outcome.request_id):
            return None
        return conversation

    def _find_conversation(self, conversation_id: str) -> Conversation | None:
        aggregate_id = conversation_uuid(conversation_id)
        if aggregate_id is None:
            return None
        try:
            found: Conversation = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Conversation) else None

    # Managed prompts

    def create_prompt(self, prompt: Callable[[], ManagedPrompt]) -> ManagedPrompt:
        created = prompt()
        try:
            self.save(created)
        except IntegrityError:
            raise DuplicatePromptKey(f"prompt key {created.key!r} is taken") from None
        return created

    def prompt(self, key: str) -> ManagedPrompt:
        try:
            found: ManagedPrompt = self.repository.get(ManagedPrompt.create_id(key))
        except AggregateNotFoundError:
            if domain_prompt(key) is not None:
                raise PromptError(
                    f"prompt {key!r} is a domain prompt, defined in code: it cannot be changed"
                ) from None
            raise PromptNotFound(f"prompt {key!r} not found") from None
        assert isinstance(found, ManagedPrompt)
        return found

    def change_prompt(self, key: str, change: Callable[[ManagedPrompt], Any]) -> ManagedPrompt:
        return self._change(lambda: self.prompt(key), change)

    def find_prompt(self, key: str) -> ManagedPrompt | DomainPrompt:
        """A managed prompt, else a domain prompt, by key."""
        try:
            found: ManagedPrompt = self.repository.get(ManagedPrompt.create_id(key))
        except AggregateNotFoundError:
            domain = domain_prompt(key)
            if domain is None:
                raise PromptNotFound(f"prompt {key!r} not found") from None
            return domain
        assert isinstance(found, ManagedPrompt)
        return found

    def _change(self, get: Callable[[], A], change: Callable[[A], Any]) -> A:
        for _ in range(ATTEMPTS):
            aggregate = get()
            change(aggregate)
            try:
                self.save(aggregate)
            except IntegrityError:
                continue  # another process saved it first: read it back and try again
            return aggregate
        raise RuntimeError("the store kept changing under this command; try again")


def completion_request(
    conversation: Conversation,
    request_id: str,
    model: str,
    messages: Messages,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The CompletionRequested of a chat turn, as published (JSON-ready)."""
    return CompletionRequested.model_validate(
        {"request_id": request_id, "model": model, "messages": messages,
         "conversation_id": str(conversation.id), "user_id": conversation.user_id,
         "params": params}
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
    return completion_request(conversation, request_id, stored["model"], messages, stored["params"])


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


def conversation_uuid(conversation_id: str | None) -> UUID | None:
    try:
        return UUID(conversation_id) if conversation_id else None
    except ValueError:
        return None


def not_found(conversation_id: str) -> ConversationNotFound:
    shown = conversation_uuid(conversation_id) or conversation_id[:100]
    return ConversationNotFound(f"conversation {shown} not found")


# Views


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
        created_at=chosen.created_at,
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


# Listings


@dataclass(frozen=True)
class Cursor:
    last_activity_at: datetime
    conversation_id: str

    def encode(self) -> str:
        raw = json.dumps([self.last_activity_at.isoformat(), self.conversation_id])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            at, conversation_id = json.loads(raw)
            return cls(datetime.fromisoformat(at), str(conversation_id))
        except (binascii.Error, ValueError, TypeError):
            raise ConversationError(
                "invalid cursor: pass the next_cursor of a previous page"
            ) from None


class Listings:
    """Each user's conversations and every managed prompt, followed from the notification log.

    In memory, rebuilt from the log at start; `catch_up` reads what was stored since (here or by
    another process) before each listing. Every aggregate touched is read back whole, so the
    listings show exactly what a get would.
    """

    def __init__(self, app: ConversationApplication, batch_size: int = 1000) -> None:
        self.app = app
        self.batch_size = batch_size
        self.position = 0
        self.conversations: dict[str, dict[str, ConversationSummary]] = {}  # user -> id -> row
        self.prompts: dict[str, PromptSummary] = {}

    def catch_up(self) -> None:
        while True:
            notifications = self.app.recorder.select_notifications(
                self.position, self.batch_size, inclusive_of_start=False
            )
            if not notifications:
                return
            conversations: set[UUID] = set()
            prompts: set[UUID] = set()
            for notification in notifications:
                if notification.topic.startswith(CONVERSATION_TOPIC):
                    conversations.add(UUID(str(notification.originator_id)))
                elif notification.topic.startswith(PROMPT_TOPIC):
                    prompts.add(UUID(str(notification.originator_id)))
            self._read(conversations, prompts)
            self.position = notifications[-1].id

    def _read(self, conversations: Iterable[UUID], prompts: Iterable[UUID]) -> None:
        for aggregate_id in conversations:
            try:
                conversation: Conversation = self.app.repository.get(aggregate_id)
            except (TopicError, ValueError, TypeError, LookupError) as exc:
                # one this version cannot read (stored by a newer one) must not stop the others
                log.warning(
                    "conversation %s left out of listings: %s", aggregate_id, type(exc).__name__
                )
                continue
            rows = self.conversations.setdefault(conversation.user_id, {})
            if conversation.deleted:
                rows.pop(str(aggregate_id), None)
            else:
                rows[str(aggregate_id)] = conversation_summary(conversation)
        for aggregate_id in prompts:
            prompt: ManagedPrompt = self.app.repository.get(aggregate_id)
            self.prompts[prompt.key] = prompt_summary(prompt)

    def page(self, user_id: str, cursor: str | None, limit: int) -> ConversationPage:
        """Newest activity first, ties by id; a cursor resumes after the row it names."""
        self.catch_up()
        rows = sorted(self.conversations.get(user_id, {}).values(), key=lambda r: r.conversation_id)
        rows.sort(key=lambda r: r.last_activity_at, reverse=True)  # stable: ties stay by id
        if cursor is not None:
            after = Cursor.decode(cursor)
            rows = [r for r in rows if later_in_order(r, after)]
        items = rows[:limit]
        more = len(rows) > limit
        next_cursor = (
            Cursor(items[-1].last_activity_at, items[-1].conversation_id).encode() if more else None
        )
        return ConversationPage(items=items, next_cursor=next_cursor)

    def prompt_list(self, include_domain: bool) -> list[PromptSummary]:
        self.catch_up()
        rows = dict(self.prompts)
        if include_domain:
            rows |= {key: prompt_summary(prompt) for key, prompt in DOMAIN_PROMPTS.items()}
        return [rows[key] for key in sorted(rows)]


def later_in_order(row: ConversationSummary, cursor: Cursor) -> bool:
    at = row.last_activity_at
    return at < cursor.last_activity_at or (
        at == cursor.last_activity_at and row.conversation_id > cursor.conversation_id
    )
