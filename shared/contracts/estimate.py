"""llmbus.completion.estimate: what a request would cost at most, asked before sending it."""

from typing import Self

from pydantic import Field, model_validator

from llmbus.shared.contracts.base import Contract, IdText
from llmbus.shared.contracts.budget import BudgetRemaining
from llmbus.shared.contracts.completion import (
    CompletionParams,
    Message,
    ModelName,
    PromptRef,
    check_target_and_input,
)


class EstimateRequest(Contract):
    """What a CompletionRequested would ask for: a model or a role (neither: the default role),
    messages or a prompt, params; the ids its budgets match on (a client's own)."""

    model: ModelName | None = None
    role: str | None = Field(default=None, min_length=1, max_length=100)
    messages: list[Message] | None = Field(default=None, min_length=1)
    prompt: PromptRef | None = None
    params: CompletionParams = Field(default_factory=CompletionParams)
    user_id: IdText | None = None
    team_id: IdText | None = None
    project_id: IdText | None = None

    @model_validator(mode="after")
    def _one_target_and_one_input(self) -> Self:
        check_target_and_input(self.model, self.role, self.messages, self.prompt)
        return self


class Estimate(Contract):
    """The answer on llmbus.completion.estimate; no model was called."""

    model: str = Field(description="The model the request would be sent to first.")
    role: str | None = Field(default=None, description="The role it would be routed by.")
    candidates: list[str] = Field(description="The models it would try, in order.")
    excluded: dict[str, str] = Field(
        default_factory=dict, description="Models of its role left out, and why."
    )
    prompt_tokens: int = Field(description="Counted offline, with the model's tokenizer.")
    max_tokens: int = Field(description="The reply length the worst case assumes.")
    worst_case_usd: float = Field(
        description="prompt_tokens and max_tokens at list price: what a budget reserves."
    )
    priced: bool = Field(description="False: no list price is known, so the worst case is 0.")
    prompt_version: int | None = Field(default=None, description="The prompt version rendered.")
    budgets: list[BudgetRemaining] = Field(
        default_factory=list, description="The budgets the request would be admitted against."
    )
    budgets_known: bool = Field(
        description="False when the usage service did not answer: budgets is then empty."
    )
