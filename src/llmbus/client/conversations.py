"""client.conversations: llmbus.conversation.*, served by the conversation service.

Sending a turn is client.chat(); this sub-client manages the conversations themselves."""

from typing import Any

from llmbus.client._transport import SubClient
from llmbus.shared import subjects
from llmbus.shared.contracts.conversation import (
    ConversationPage,
    ConversationSummary,
    ConversationView,
)


class Conversations(SubClient):
    service = "conversation"

    async def create(
        self,
        user_id: str,
        title: str,
        *,
        metadata: dict[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> ConversationView:
        request = {"user_id": user_id, "title": title, "metadata": metadata or {},
                   "model": model, "system": system}  # fmt: skip
        return await self._call(subjects.CONVERSATION_CREATE, request, ConversationView)

    async def get(self, user_id: str, conversation_id: str) -> ConversationView:
        request = {"user_id": user_id, "conversation_id": conversation_id}
        return await self._call(subjects.CONVERSATION_GET, request, ConversationView)

    async def rename(self, user_id: str, conversation_id: str, title: str) -> ConversationView:
        request = {"user_id": user_id, "conversation_id": conversation_id, "title": title}
        return await self._call(subjects.CONVERSATION_RENAME, request, ConversationView)

    async def delete(self, user_id: str, conversation_id: str) -> ConversationSummary:
        request = {"user_id": user_id, "conversation_id": conversation_id}
        return await self._call(subjects.CONVERSATION_DELETE, request, ConversationSummary)

    # last: below this line `list` would name the method, not the builtin
    async def list(
        self, user_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> ConversationPage:
        """One page, newest activity first; pass its next_cursor for the next one."""
        request = {"user_id": user_id, "cursor": cursor, "limit": limit}
        return await self._call(subjects.CONVERSATION_LIST, request, ConversationPage)
