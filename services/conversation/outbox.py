"""What the conversation store's events become on NATS: chat turns become CompletionRequested,
prompt changes become PromptChanged."""

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol

from llmbus.services.conversation.conversation import Conversation
from llmbus.services.conversation.prompt import ManagedPrompt
from llmbus.shared import subjects
from llmbus.shared.contracts.base import utcnow
from llmbus.shared.contracts.prompt import PromptChanged
from llmbus.shared.eventstore import OutboxApplication
from llmbus.shared.outbox import Outbound

MESSAGE_ADDED = getattr(Conversation, "MessageAdded")  # noqa: B009 (made by @event)
PROMPT_CREATED = getattr(ManagedPrompt, "PromptCreated")  # noqa: B009
KEY_CACHE_SIZE = 10_000


class ConversationRoute:
    """Routes stored events to subjects. Prompt events after the first carry no key: it is read
    from the prompt, once."""

    def __init__(self, app: OutboxApplication) -> None:
        self.app = app
        self.keys: dict[UUID, str] = {}

    def __call__(self, event: DomainEventProtocol[Any]) -> Iterator[Outbound]:
        if isinstance(event, MESSAGE_ADDED):
            request = event.request
            if request is not None:
                # the same id whichever relay publishes it: JetStream drops the repeats
                msg_id = f"conversation:{request['request_id']}"
                yield Outbound(subjects.COMPLETION_REQUESTED, dumps(request), msg_id)
        elif isinstance(event, ManagedPrompt.Event):
            yield self.prompt_changed(event)

    def prompt_changed(self, event: DomainEventProtocol[Any]) -> Outbound:
        key = self.key_of(event)
        name = type(event).__name__
        version = getattr(event, "version", None) or getattr(event, "number", None)
        if isinstance(event, PROMPT_CREATED):
            version = 1
        changed = PromptChanged(
            key=key, event=name, version=version, label=getattr(event, "label", None),
            labels=list(getattr(event, "labels", None) or []),
            occurred_at=getattr(event, "timestamp", None) or utcnow(),
        )  # fmt: skip
        return Outbound(
            subjects.PROMPT_EVENTS.format(key=key),
            dumps(changed.model_dump(mode="json")),
            f"prompt:{key}:{event.originator_version}",
        )

    def key_of(self, event: DomainEventProtocol[Any]) -> str:
        key = getattr(event, "key", None) or self.keys.get(event.originator_id)
        if key is None:
            prompt: ManagedPrompt = self.app.repository.get(
                event.originator_id, version=event.originator_version
            )
            key = prompt.key
        if len(self.keys) < KEY_CACHE_SIZE:
            self.keys[event.originator_id] = key
        return str(key)


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
