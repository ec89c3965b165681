"""The conversation service's NATS edge: llmbus.conversation.* and llmbus.prompt.* requests.

Each handler takes its request model and returns its reply model; shared/rpc turns what they
raise into the ErrorReply. Message contents are never logged: only ids, keys and versions.
Who may ask for what is decided in access.py.
"""

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmbus.services.conversation.access import acting_for, check_may_change, owning_team
from llmbus.services.conversation.application import (
    DOMAIN_AUTHOR,
    Messages,
    check_domain_selector,
    conversation_summary,
    conversation_view,
    prompt_view,
)
from llmbus.services.conversation.domain.prompt import ManagedPrompt
from llmbus.shared import subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.contracts.conversation import (
    ChatReply,
    ConversationPage,
    ConversationSummary,
    ConversationView,
    CreateConversation,
    DeleteConversation,
    GetConversation,
    ListConversations,
    RenameConversation,
    SendMessage,
)
from llmbus.shared.contracts.prompt import (
    CreatePrompt,
    GetPrompt,
    ListPrompts,
    MoveLabel,
    PreviewPrompt,
    PromptHistory,
    PromptHistoryEntry,
    PromptHistoryQuery,
    PromptList,
    PromptPreview,
    PromptView,
    RenderedPrompt,
    RenderPrompt,
    ResolvedPrompt,
    ResolvePrompt,
    SetPromptActive,
    UpdatePrompt,
)
from llmbus.shared.identity import caller
from llmbus.shared.prompts.library import DomainPrompt
from llmbus.shared.prompts.template import render
from llmbus.shared.rpc import RpcRouter

if TYPE_CHECKING:
    from llmbus.services.conversation.service import ConversationService

log = logging.getLogger("llmbus.conversation")


class ConversationHandlers:
    def __init__(self, service: "ConversationService") -> None:
        self.service = service
        self.app = service.app
        self.on_store = service.on_store

    async def create(self, req: CreateConversation) -> ConversationView:
        conversation = await self.on_store(
            self.app.start, acting_for(req.user_id), req.title, req.metadata, req.model, req.system
        )
        return conversation_view(conversation)

    async def get(self, req: GetConversation) -> ConversationView:
        conversation = await self.on_store(
            self.app.conversation, acting_for(req.user_id), req.conversation_id
        )
        return conversation_view(conversation)

    async def page(self, req: ListConversations) -> ConversationPage:
        listings = self.service.listings
        return await self.on_store(listings.page, acting_for(req.user_id), req.cursor, req.limit)

    async def rename(self, req: RenameConversation) -> ConversationView:
        conversation = await self.on_store(
            self.app.rename, acting_for(req.user_id), req.conversation_id, req.title
        )
        return conversation_view(conversation)

    async def delete(self, req: DeleteConversation) -> ConversationSummary:
        conversation = await self.on_store(
            self.app.delete, acting_for(req.user_id), req.conversation_id
        )
        return conversation_summary(conversation)

    async def send(self, req: SendMessage) -> ChatReply:
        """Store a chat turn; with `wait`, answer once its outcome is stored too."""
        acting_for(req.user_id)
        sender = caller()  # a client's turn is its own: its chunks, status and cancel
        sent_by = sender.name if sender is not None else None
        return await self.service.send(req, req.request_id or uuid.uuid4().hex, sent_by)


class PromptHandlers:
    def __init__(self, service: "ConversationService") -> None:
        self.service = service
        self.app = service.app
        self.on_store = service.on_store

    async def create(self, req: CreatePrompt) -> PromptView:
        team_id = owning_team(caller())

        def new_prompt() -> ManagedPrompt:
            return ManagedPrompt.create(
                req.key, req.name, req.template, req.variables, req.description,
                req.author or "", req.labels, req.note, team_id,
            )  # fmt: skip

        prompt = await self.on_store(self.app.create_prompt, new_prompt)
        log.info("prompt %s created", prompt.key)
        await self.service.announce()
        return prompt_view(prompt)

    async def update(self, req: UpdatePrompt) -> PromptView:
        def update(prompt: ManagedPrompt) -> None:
            prompt.update(
                req.author or "", req.template, req.variables, req.name, req.description,
                req.note, req.labels,
            )  # fmt: skip

        prompt = await self.change(req.key, "updating", update)
        log.info("prompt %s updated to version %d", prompt.key, prompt.latest.number)
        return prompt_view(prompt, version=prompt.latest.number)

    async def change(
        self, key: str, action: str, change: Callable[[ManagedPrompt], Any]
    ) -> ManagedPrompt:
        """Change a stored prompt, if the caller may; answer once workers have heard of it."""
        identity = caller()  # read here: the store's thread does not see the request's context

        def permitted(prompt: ManagedPrompt) -> Any:
            check_may_change(identity, prompt, action)
            return change(prompt)

        prompt = await self.on_store(self.app.change_prompt, key, permitted)
        await self.service.announce()
        return prompt

    async def get(self, req: GetPrompt) -> PromptView:
        prompt = await self.on_store(self.app.find_prompt, req.key)
        return prompt_view(prompt, req.label, req.version)

    async def listing(self, req: ListPrompts) -> PromptList:
        listings = self.service.listings
        return PromptList(items=await self.on_store(listings.prompt_list, req.include_domain))

    async def history(self, req: PromptHistoryQuery) -> PromptHistory:
        prompt = await self.on_store(self.app.find_prompt, req.key)
        if isinstance(prompt, DomainPrompt):
            created = PromptHistoryEntry(
                event="PromptCreated", version=prompt.version, labels=["latest"],
                author=DOMAIN_AUTHOR, note="defined in code",
                changes=["name", "description", "template", "variables"],
            )  # fmt: skip
            entries = [created]
        else:
            entries = [PromptHistoryEntry.model_validate(e) for e in prompt.history()]
        return PromptHistory(key=req.key, entries=entries)

    async def label(self, req: MoveLabel) -> PromptView:
        prompt = await self.change(
            req.key, "moving a label of",
            lambda p: p.label(req.label, req.version, req.author or "", req.note),
        )  # fmt: skip
        return prompt_view(prompt, label=req.label)

    async def rollback(self, req: MoveLabel) -> PromptView:
        prompt = await self.change(
            req.key, "rolling back",
            lambda p: p.rollback(req.label, req.version, req.author or "", req.note),
        )  # fmt: skip
        return prompt_view(prompt, label=req.label)

    async def activate(self, req: SetPromptActive) -> PromptView:
        prompt = await self.change(req.key, "activating", lambda p: p.activate(req.author or ""))
        return prompt_view(prompt)

    async def deactivate(self, req: SetPromptActive) -> PromptView:
        prompt = await self.change(
            req.key, "deactivating", lambda p: p.deactivate(req.author or "")
        )
        return prompt_view(prompt)

    async def render(self, req: RenderPrompt) -> RenderedPrompt:
        version, messages = await self.on_store(self.rendered, req)
        return RenderedPrompt.model_validate(
            {"key": req.key, "version": version, "messages": messages}
        )

    def rendered(self, req: RenderPrompt) -> tuple[int, Messages]:
        prompt = self.app.find_prompt(req.key)
        if isinstance(prompt, DomainPrompt):
            check_domain_selector(prompt, req.label, req.version)
            return prompt.version, render(prompt.template, prompt.variables, req.variables)
        chosen, messages = prompt.render(req.variables, req.label, req.version)
        return chosen.number, messages

    async def preview(self, req: PreviewPrompt) -> PromptPreview:
        return await self.on_store(self.previewed, req)

    def previewed(self, req: PreviewPrompt) -> PromptPreview:
        version, messages = self.rendered(req)
        tokens, cap, input_cost, worst = self.service.fitter.preview(
            req.model, messages, req.params.max_tokens
        )
        return PromptPreview.model_validate(
            {"key": req.key, "version": version, "model": req.model, "messages": messages,
             "prompt_tokens": tokens, "max_output_tokens": cap,
             "input_cost_usd": float(input_cost), "worst_case_cost_usd": float(worst)}
        )  # fmt: skip

    async def resolve(self, req: ResolvePrompt) -> ResolvedPrompt:
        """The prompt a completion worker renders a request with."""
        prompt = await self.on_store(self.app.find_prompt, req.key)
        view = prompt_view(prompt, req.label, req.version)
        return ResolvedPrompt(
            key=view.key, version=view.version, name=view.name, template=view.template,
            variables=view.variables, active=view.active, source=view.source,
        )  # fmt: skip


def conversation_router(
    conversations: ConversationHandlers,
    prompts: PromptHandlers,
    max_payload: Callable[[], int],
    clients: ClientDirectory | None = None,
) -> RpcRouter:
    router = RpcRouter(
        "conversation", subjects.CONVERSATION_QUEUE, max_payload, clients, metered=True
    )
    router.answer(subjects.CONVERSATION_CREATE, conversations.create)
    router.answer(subjects.CONVERSATION_GET, conversations.get)
    router.answer(subjects.CONVERSATION_LIST, conversations.page)
    router.answer(subjects.CONVERSATION_RENAME, conversations.rename)
    router.answer(subjects.CONVERSATION_DELETE, conversations.delete)
    router.answer(subjects.CONVERSATION_SEND, conversations.send)
    router.answer(subjects.PROMPT_CREATE, prompts.create)
    router.answer(subjects.PROMPT_UPDATE, prompts.update)
    router.answer(subjects.PROMPT_GET, prompts.get)
    router.answer(subjects.PROMPT_LIST, prompts.listing)
    router.answer(subjects.PROMPT_HISTORY, prompts.history)
    router.answer(subjects.PROMPT_LABEL, prompts.label)
    router.answer(subjects.PROMPT_ROLLBACK, prompts.rollback)
    router.answer(subjects.PROMPT_ACTIVATE, prompts.activate)
    router.answer(subjects.PROMPT_DEACTIVATE, prompts.deactivate)
    router.answer(subjects.PROMPT_RENDER, prompts.render)
    router.answer(subjects.PROMPT_PREVIEW, prompts.preview)
    router.answer(subjects.PROMPT_RESOLVE, prompts.resolve)
    return router
