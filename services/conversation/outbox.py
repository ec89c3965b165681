"""What the conversation store's events become on NATS: chat turns become CompletionRequested,
prompt changes become PromptChanged.

A turn's MessageAdded stores the request's model, params and how many old turns it leaves out,
not its messages: the route reads the conversation back at the turn's version and rebuilds the
request from it, so a turn's event does not grow with the conversation.
"""

import json
from collections.abc import Iterable, Iterator
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from llmbus.services.conversation.application.turns import sent_request
from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.domain.prompt import ManagedPrompt
from llmbus.shared import subjects
from llmbus.shared.contracts.base import utcnow
from llmbus.shared.contracts.prompt import PromptChanged
from llmbus.shared.deadletter import caused_by_entry
from llmbus.shared.eventstore import OutboxApplication
from llmbus.shared.outbox import Outbound

MESSAGE_ADDED = Conversation.MessageAdded
MESSAGE_ADDED_TOPIC = get_topic(MESSAGE_ADDED)
PROMPT_CREATED = ManagedPrompt.PromptCreated
KEY_CACHE_SIZE = 10_000


class ConversationRoute:
    """Routes stored events to subjects. Prompt events after the first carry no key: it is read
    from the prompt, once. A chat turn's request is rebuilt from its conversation, read back at
    the turn's version; `prepare` does that for a batch ahead of time, on the caller's thread."""

    def __init__(self, app: OutboxApplication) -> None:
        self.app = app
        self.keys: dict[UUID, str] = {}
        # (conversation id, version) -> request rebuilt by prepare(), for the batch in hand,
        # or why it could not be: route() raises that, and the relay parks the turn
        self.prepared: dict[tuple[UUID, int], dict[str, Any] | Exception] = {}

    def __call__(self, event: DomainEventProtocol[Any]) -> Iterator[Outbound]:
        if isinstance(event, MESSAGE_ADDED):
            if event.request is not None:
                request = self.completion_requested(event)
                # the same id whichever relay publishes it: JetStream drops the repeats
                msg_id = f"conversation:{request['request_id']}"
                yield Outbound(subjects.COMPLETION_REQUESTED, dumps(request), msg_id)
        elif isinstance(event, ManagedPrompt.Event):
            yield self.prompt_changed(event)

    def prepare(self, notifications: Iterable[Notification]) -> None:
        """Rebuild the requests of the chat turns among `notifications` now, so that routing
        them reads no conversation: the relay calls this where it reads the store, off the
        event loop. Replaces what the previous batch prepared."""
        prepared: dict[tuple[UUID, int], dict[str, Any] | Exception] = {}
        for notification in notifications:
            if notification.topic != MESSAGE_ADDED_TOPIC:
                continue
            key = (UUID(str(notification.originator_id)), notification.originator_version)
            try:
                event = self.app.mapper.to_domain_event(notification)
                if isinstance(event, MESSAGE_ADDED) and event.request is not None:
                    prepared[key] = self.completion_requested(event)
            except Exception as exc:
                if not caused_by_entry(exc):
                    raise  # the store is down: the relay retries the batch
                prepared[key] = exc
        self.prepared = prepared

    def completion_requested(self, event: Conversation.MessageAdded) -> dict[str, Any]:
        """The CompletionRequested a MessageAdded starts, with the history it sends."""
        stored = event.request
        assert stored is not None  # only a turn that starts a request is routed here
        if "messages" in stored:
            return stored  # stored whole, before turns were stored compactly
        prepared = self.prepared.get((event.originator_id, event.originator_version))
        if isinstance(prepared, Exception):
            raise prepared
        if prepared is not None:
            return prepared
        conversation: Conversation = self.app.repository.get(
            event.originator_id, version=event.originator_version
        )
        assert event.request_id is not None
        return sent_request(conversation, event.request_id, stored)

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
