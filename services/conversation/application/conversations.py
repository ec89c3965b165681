"""The conversation store's commands and queries: conversations, their turns and outcomes, and
managed prompts.

Commands read get -> change -> save. A save that loses a version race to another conversation
service on the same store is read back and tried again (`retry_on_conflict`).
"""

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from llmbus.services.conversation.application.turns import (
    Fitter,
    NewConversation,
    Outcome,
    TurnRequest,
    add_turn,
    apply_outcome,
)
from llmbus.services.conversation.domain.checks import check_content
from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.domain.errors import (
    ConversationError,
    ConversationNotFound,
    DuplicatePromptKey,
    PromptError,
    PromptNotFound,
)
from llmbus.services.conversation.domain.history import TurnClaim
from llmbus.services.conversation.domain.prompt import ManagedPrompt
from llmbus.shared.contracts.conversation import SendMessage
from llmbus.shared.errors import RequestConflictError
from llmbus.shared.eventstore import OutboxApplication, retry_on_conflict
from llmbus.shared.limits import Limits
from llmbus.shared.prompts.library import DomainPrompt, domain_prompt

log = logging.getLogger("llmbus.conversation")
A = TypeVar("A", Conversation, ManagedPrompt)


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
        conversation_id: str | NewConversation,
        content: str,
        request_id: str,
        model: str | None,
        params: dict[str, Any],
        fit: Fitter,
        limits: Limits,
        default_model: str | None = None,
        stream: bool = False,
        sent_by: str | None = None,
    ) -> Conversation:
        """Store the user's turn with the completion request it starts (published by the
        outbox, streamed if `stream`; `sent_by`: the client that sent it); a request id sent
        before stores nothing new. A turn that is refused stores nothing: not even the
        conversation, when the turn was to start it."""
        check_content(content)
        turn = TurnRequest(
            content, request_id, model, params, fit, limits, default_model, stream, sent_by
        )

        def attempt() -> Conversation:
            if isinstance(conversation_id, NewConversation):
                conversation = self._first_turn_of(user_id, conversation_id, turn)
            else:
                conversation = self.conversation(user_id, conversation_id)
            claims = self._claim_turn(conversation, request_id)
            add_turn(conversation, turn)
            # one save: a turn is never stored without its claim, nor a claim without its turn
            self.save(conversation, *claims)
            return conversation

        return retry_on_conflict(attempt, f"store turn {request_id}")

    def _claim_turn(self, conversation: Conversation, request_id: str) -> list[TurnClaim]:
        """The claim to save with a new turn; none for a re-send. A request id another
        conversation's turn holds is refused: answering it would hand over that turn's outcome.
        A claim saved meanwhile by another process fails the save, and the retry sees it."""
        if conversation.has_request(request_id):
            return []  # a re-send of this conversation's turn: claimed when first stored
        claim = self._find_claim(request_id)
        if claim is None:
            return [TurnClaim(request_id=request_id, conversation_id=str(conversation.id))]
        if claim.conversation_id != str(conversation.id):
            raise RequestConflictError(
                f"request_id {request_id!r} is already another chat turn's; a turn id is its "
                "own turn's idempotency key: send this turn with a new request_id"
            )
        return []

    def _first_turn_of(self, user_id: str, new: NewConversation, turn: TurnRequest) -> Conversation:
        """The conversation this first turn starts: a new one, not saved until its turn is
        added, or the one a previous send of the same request id started."""
        conversation_id = Conversation.first_turn_id(user_id, turn.request_id)
        started = self._find_conversation(str(conversation_id))
        if started is not None:
            started.check_owner(user_id)
            return started
        return Conversation.start(
            user_id, new.title_for(turn.content), new.metadata, turn.model, new.system,
            conversation_id=conversation_id,
        )  # fmt: skip

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[Conversation]:
        """Record each outcome on the conversation whose turn asked for it, once; outcomes of
        requests no conversation sent are left alone. Returns the conversations changed."""
        touched: dict[UUID, Conversation] = {}
        for outcome in outcomes:
            conversation = self._sender(outcome, touched)
            if conversation is not None and applied(conversation, outcome):
                touched[conversation.id] = conversation
        try:
            self.save(*touched.values())
        except IntegrityError:
            # another conversation service changed one of them: one at a time, read back
            return [c for c in (self._record_one(o) for o in outcomes) if c is not None]
        return list(touched.values())

    def _record_one(self, outcome: Outcome) -> Conversation | None:
        def attempt() -> Conversation | None:
            conversation = self._sender(outcome)
            if conversation is None or not applied(conversation, outcome):
                return None
            self.save(conversation)
            return conversation

        return retry_on_conflict(attempt, f"record the outcome of {outcome.request_id}")

    def _sender(
        self, outcome: Outcome, touched: dict[UUID, Conversation] | None = None
    ) -> Conversation | None:
        """The conversation whose turn asked for this outcome: the one the outcome names, if
        that conversation sent the request, its turn's claim is that conversation's, and the
        outcome's user (if it names one) is its owner. An event is not trusted blindly: any
        other outcome is logged and left alone."""
        aggregate_id = conversation_uuid(outcome.conversation_id)
        if aggregate_id is None:
            return None
        conversation = (touched or {}).get(aggregate_id) or self._find_conversation(
            str(aggregate_id)
        )
        if conversation is None or not conversation.has_request(outcome.request_id):
            return None
        claim = self._find_claim(outcome.request_id)
        claimed_here = claim is None or claim.conversation_id == str(conversation.id)
        if not claimed_here or outcome.user_id not in (None, conversation.user_id):
            log.warning(
                "outcome of %s names conversation %s, not its turn's: ignored",
                outcome.request_id, aggregate_id,
            )  # fmt: skip
            return None
        return conversation

    def _find_claim(self, request_id: str) -> TurnClaim | None:
        try:
            found: TurnClaim = self.repository.get(TurnClaim.create_id(request_id))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, TurnClaim) else None

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
        """A managed prompt, to change; a domain prompt's key says it cannot be changed."""
        found = self._find_prompt(key)
        if found is None:
            if domain_prompt(key) is not None:
                raise PromptError(
                    f"prompt {key!r} is a domain prompt, defined in code: it cannot be changed"
                )
            raise PromptNotFound(f"prompt {key!r} not found")
        return found

    def change_prompt(self, key: str, change: Callable[[ManagedPrompt], Any]) -> ManagedPrompt:
        return self._change(lambda: self.prompt(key), change)

    def find_prompt(self, key: str) -> ManagedPrompt | DomainPrompt:
        """A managed prompt, else a domain prompt, by key."""
        managed = self._find_prompt(key)
        if managed is not None:
            return managed
        domain = domain_prompt(key)
        if domain is None:
            raise PromptNotFound(f"prompt {key!r} not found")
        return domain

    def _find_prompt(self, key: str) -> ManagedPrompt | None:
        try:
            found: ManagedPrompt = self.repository.get(ManagedPrompt.create_id(key))
        except AggregateNotFoundError:
            return None
        assert isinstance(found, ManagedPrompt)
        return found

    def _change(self, get: Callable[[], A], change: Callable[[A], Any]) -> A:
        def attempt() -> A:
            aggregate = get()  # read afresh each time: a lost save used up its pending events
            change(aggregate)
            self.save(aggregate)
            return aggregate

        return retry_on_conflict(attempt, "carry out this command")


def applied(conversation: Conversation, outcome: Outcome) -> bool:
    """Whether the outcome was recorded now. One that cannot be (it would fail on every
    redelivery too) is logged and left out rather than retried forever."""
    try:
        return apply_outcome(conversation, outcome)
    except ConversationError as exc:
        log.warning("outcome of %s not recorded: %s", outcome.request_id, exc)
        return False


def conversation_uuid(conversation_id: str | None) -> UUID | None:
    try:
        return UUID(conversation_id) if conversation_id else None
    except ValueError:
        return None


def not_found(conversation_id: str) -> ConversationNotFound:
    shown = conversation_uuid(conversation_id) or conversation_id[:100]
    return ConversationNotFound(f"conversation {shown} not found")


def waited_conversation(req: SendMessage, request_id: str) -> str:
    """The id of the conversation a send's turn goes to, as the store spells it: the one named,
    or the one its first turn starts."""
    if req.conversation_id is None:
        return str(Conversation.first_turn_id(req.user_id, request_id))
    return str(conversation_uuid(req.conversation_id) or req.conversation_id)
