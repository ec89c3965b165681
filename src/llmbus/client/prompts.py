"""client.prompts: managed prompts (llmbus.prompt.*, served by the conversation service)."""

from collections.abc import Sequence
from typing import Any

from llmbus.client._transport import SubClient, dumpable, new_request_id
from llmbus.shared import subjects
from llmbus.shared.contracts.completion import CompletionRequested, PromptRef
from llmbus.shared.contracts.prompt import (
    PlaygroundResult,
    PromptHistory,
    PromptHistoryEntry,
    PromptList,
    PromptPreview,
    PromptSummary,
    PromptView,
    RenderedPrompt,
)


class Prompts(SubClient):
    service = "conversation"

    async def create(
        self,
        key: str,
        name: str,
        template: Any,
        *,
        variables: Sequence[Any] = (),
        description: str = "",
        labels: Sequence[str] = (),
        author: str | None = None,
        note: str = "",
    ) -> PromptView:
        """A new managed prompt at version 1; raises RequestError duplicate_key if the key is
        taken. `template` is text with {{variable}} placeholders, or a list of chat turns."""
        request = {
            "key": key, "name": name, "template": dumpable(template),
            "variables": [dumpable(v) for v in variables], "description": description,
            "labels": list(labels), "author": author, "note": note,
        }  # fmt: skip
        return await self._call(subjects.PROMPT_CREATE, request, PromptView)

    async def update(
        self,
        key: str,
        *,
        template: Any = None,
        variables: Sequence[Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        labels: Sequence[str] = (),
        author: str | None = None,
        note: str = "",
    ) -> PromptView:
        """A new immutable version; returns it."""
        request = {
            "key": key, "template": dumpable(template), "name": name,
            "variables": None if variables is None else [dumpable(v) for v in variables],
            "description": description, "labels": list(labels), "author": author, "note": note,
        }  # fmt: skip
        return await self._call(subjects.PROMPT_UPDATE, request, PromptView)

    async def get(
        self, key: str, *, label: str | None = None, version: int | None = None
    ) -> PromptView:
        request = {"key": key, "label": label, "version": version}
        return await self._call(subjects.PROMPT_GET, request, PromptView)

    async def history(self, key: str) -> list[PromptHistoryEntry]:
        history = await self._call(subjects.PROMPT_HISTORY, {"key": key}, PromptHistory)
        return history.entries

    async def label(
        self, key: str, label: str, version: int, *, author: str | None = None
    ) -> PromptView:
        request = {"key": key, "label": label, "version": version, "author": author}
        return await self._call(subjects.PROMPT_LABEL, request, PromptView)

    async def rollback(
        self, key: str, label: str, version: int, *, author: str | None = None
    ) -> PromptView:
        """Move a label back to an earlier version."""
        request = {"key": key, "label": label, "version": version, "author": author}
        return await self._call(subjects.PROMPT_ROLLBACK, request, PromptView)

    async def activate(self, key: str, *, author: str | None = None) -> PromptView:
        request = {"key": key, "author": author}
        return await self._call(subjects.PROMPT_ACTIVATE, request, PromptView)

    async def deactivate(self, key: str, *, author: str | None = None) -> PromptView:
        request = {"key": key, "author": author}
        return await self._call(subjects.PROMPT_DEACTIVATE, request, PromptView)

    async def render(
        self,
        key: str,
        variables: dict[str, Any],
        *,
        label: str | None = None,
        version: int | None = None,
    ) -> RenderedPrompt:
        """The messages a model would get; raises RequestError invalid_variables naming the
        variable that is missing or of the wrong type."""
        request = {"key": key, "variables": variables, "label": label, "version": version}
        return await self._call(subjects.PROMPT_RENDER, request, RenderedPrompt)

    async def preview(
        self,
        key: str,
        variables: dict[str, Any],
        model: str,
        *,
        label: str | None = None,
        version: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> PromptPreview:
        """The rendered messages with their tokens counted offline and priced at list price;
        no model is called."""
        request = {"key": key, "variables": variables, "model": model, "label": label,
                   "version": version, "params": params or {}}  # fmt: skip
        return await self._call(subjects.PROMPT_PREVIEW, request, PromptPreview)

    async def playground(
        self,
        key: str,
        variables: dict[str, Any],
        model: str,
        *,
        label: str | None = None,
        version: int | None = None,
        params: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> PlaygroundResult:
        """A preview before the call, then the call itself through the pipeline by prompt
        reference (its usage is accounted to the prompt version); reply.cost_usd is the true
        cost. Raises CompletionError if the call fails."""
        preview = await self.preview(
            key, variables, model, label=label, version=version, params=params
        )
        ref = PromptRef(key=key, label=label, version=version, variables=variables)
        request = CompletionRequested.model_validate(
            {"request_id": new_request_id(), "model": model, "prompt": ref, "user_id": user_id,
             "params": params or {}}
        )  # fmt: skip
        return PlaygroundResult(preview=preview, reply=await self._client.complete(request))

    # last: below this line `list` would name the method, not the builtin
    async def list(self, *, include_domain: bool = True) -> list[PromptSummary]:
        request = {"include_domain": include_domain}
        return (await self._call(subjects.PROMPT_LIST, request, PromptList)).items
