"""Managed prompts over NATS: llmbus.prompt.* requests, their replies, and PromptChanged.

A prompt is named by its key: a managed prompt (versions, labels, stored as events) or a domain
prompt shipped in code (one version, every label on it, always active). Errors come back as
ErrorReply with error_type invalid_request, not_found, duplicate_key, prompt_inactive,
invalid_variables or internal.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from llmbus.shared.contracts.base import Contract, utcnow
from llmbus.shared.contracts.completion import CompletionParams, CompletionReceived, Message
from llmbus.shared.prompts.template import ChatTurn, Variable

PromptKey = str
Label = Literal["production", "staging", "development", "latest"]
Source = Literal["managed", "domain"]
TemplateBody = str | list[ChatTurn]


class PromptSelector(Contract):
    """Which version of a prompt: a label, a version number, or neither ("production" if set,
    else "latest")."""

    key: PromptKey = Field(min_length=1, max_length=100)
    label: str | None = None
    version: int | None = Field(default=None, ge=1)


class CreatePrompt(Contract):
    """The request on llmbus.prompt.create; a key already taken is `duplicate_key`."""

    key: PromptKey = Field(description="A slug: a-z, 0-9, '-' and '_', 1-100 characters.")
    name: str
    template: TemplateBody = Field(
        description="Text with {{variable}} placeholders, or a list of chat turns."
    )
    variables: list[Variable] = Field(
        default_factory=list,
        description="Declarations; placeholders left undeclared are required strings.",
    )
    description: str = ""
    labels: list[Label] = Field(
        default_factory=list, description="Labels to put on version 1 besides latest."
    )
    author: str | None = None
    note: str = ""


class UpdatePrompt(Contract):
    """The request on llmbus.prompt.update: a new immutable version (latest moves to it)."""

    key: PromptKey
    template: TemplateBody | None = None
    variables: list[Variable] | None = None
    name: str | None = None
    description: str | None = None
    labels: list[Label] = Field(default_factory=list)
    author: str | None = None
    note: str = ""


class GetPrompt(PromptSelector):
    """The request on llmbus.prompt.get."""


class ListPrompts(Contract):
    """The request on llmbus.prompt.list."""

    include_domain: bool = True


class PromptHistoryQuery(Contract):
    """The request on llmbus.prompt.history."""

    key: PromptKey


class MoveLabel(Contract):
    """The request on llmbus.prompt.label and llmbus.prompt.rollback (which only goes back)."""

    key: PromptKey
    label: Label
    version: int = Field(ge=1)
    author: str | None = None
    note: str = ""


class SetPromptActive(Contract):
    """The request on llmbus.prompt.activate and llmbus.prompt.deactivate."""

    key: PromptKey
    author: str | None = None


class RenderPrompt(PromptSelector):
    """The request on llmbus.prompt.render."""

    variables: dict[str, Any] = Field(default_factory=dict)


class PreviewPrompt(RenderPrompt):
    """The request on llmbus.prompt.preview: the rendered messages priced for a model, with no
    model call."""

    model: str = Field(min_length=1)
    params: CompletionParams = Field(default_factory=CompletionParams)


class ResolvePrompt(PromptSelector):
    """The request on llmbus.prompt.resolve, asked by completion workers."""


class PromptView(Contract):
    """A prompt at one version (the one asked for, else the one a render would use)."""

    key: str
    source: Source
    active: bool
    version: int
    name: str
    description: str
    template: TemplateBody
    variables: list[Variable]
    labels: dict[str, int] = Field(description="Label -> the version it points at.")
    latest_version: int
    author: str = Field(description="Who made this version.")
    note: str = ""
    created_at: datetime | None = Field(description="When this version was made; null: in code.")
    team_id: str | None = Field(
        default=None, description="The team whose clients may change it; null: admins only."
    )


class PromptSummary(Contract):
    key: str
    source: Source
    active: bool
    name: str
    description: str
    latest_version: int
    labels: dict[str, int]
    updated_at: datetime | None = None


class PromptList(Contract):
    """The reply on llmbus.prompt.list, ordered by key."""

    items: list[PromptSummary]


class PromptHistoryEntry(Contract):
    event: str
    version: int | None = None
    label: str | None = None
    labels: list[str] = Field(default_factory=list)
    author: str
    at: datetime | None = None
    note: str = ""
    changes: list[str] = Field(default_factory=list)


class PromptHistory(Contract):
    """The reply on llmbus.prompt.history: who changed what and when, oldest first."""

    key: str
    entries: list[PromptHistoryEntry]


class RenderedPrompt(Contract):
    """The reply on llmbus.prompt.render."""

    key: str
    version: int
    messages: list[Message]


class PromptPreview(Contract):
    """The reply on llmbus.prompt.preview: tokens counted offline, at list price."""

    key: str
    version: int
    model: str
    messages: list[Message]
    prompt_tokens: int
    max_output_tokens: int = Field(description="The reply length the worst case assumes.")
    input_cost_usd: float
    worst_case_cost_usd: float = Field(
        description="Input plus max_output_tokens of output; what a budget would reserve."
    )


class ResolvedPrompt(Contract):
    """The reply on llmbus.prompt.resolve."""

    key: str
    version: int
    name: str
    template: TemplateBody
    variables: list[Variable]
    active: bool
    source: Source


class PromptChanged(Contract):
    """Published to llmbus.prompt.events.<key> for every change to a managed prompt."""

    key: str
    event: str = Field(description="PromptCreated, PromptVersionCreated, LabelMoved, ...")
    version: int | None = None
    label: str | None = None
    labels: list[str] = Field(default_factory=list, description="Labels moved by the change.")
    occurred_at: datetime = Field(default_factory=utcnow)


class PlaygroundResult(Contract):
    """What Client.playground returns: the preview before the call, the reply after it."""

    preview: PromptPreview
    reply: CompletionReceived
