"""Each user's conversations and every managed prompt, listed from the notification log.

Listings follow the log rather than an index of their own: rebuilt at start, they see what any
process sharing the store has saved since.
"""

import base64
import binascii
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import TopicError, get_topic

from llmbus.services.conversation.application.views import conversation_summary, prompt_summary
from llmbus.services.conversation.domain.conversation import Conversation
from llmbus.services.conversation.domain.errors import ConversationError
from llmbus.services.conversation.domain.prompt import ManagedPrompt
from llmbus.shared.contracts.conversation import ConversationPage, ConversationSummary
from llmbus.shared.contracts.prompt import PromptSummary
from llmbus.shared.prompts.library import DOMAIN_PROMPTS

log = logging.getLogger("llmbus.conversation")
CONVERSATION_TOPIC = get_topic(Conversation) + "."
PROMPT_TOPIC = get_topic(ManagedPrompt) + "."


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
    """In memory, rebuilt from the log at start; `catch_up` reads what was stored since (here or
    by another process) before each listing. Every aggregate touched is read back whole, so the
    listings show exactly what a get would.
    """

    def __init__(self, app: Application[UUID], batch_size: int = 1000) -> None:
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
