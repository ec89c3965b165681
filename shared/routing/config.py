"""The routing part of the configuration file: `defaults`, `roles` and `default_role`.

    defaults:
      params: {temperature: 0.7}
    roles:
      coder:     {model: gpt-4o, fallbacks: [claude-sonnet, local-llama]}
      clarifier: {strategy: cheapest-capable, candidates: [gpt-4o-mini, llmbus-sim/small],
                  requires: {json_mode: true}}
    default_role: clarifier

Only the shape is checked here. Whether a name is a model llmbus can call, and whether
fallbacks loop, need the catalog: `llmbus config validate` and the router check those.
"""

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Strategy = Literal["fallback", "cheapest-capable"]
RoleName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Capabilities(Strict):
    """What a request can use, or a role requires, of a model besides plain text."""

    tools: bool = False
    vision: bool = False
    json_mode: bool = False


class Defaults(Strict):
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of every call; the model's, the role's "
        "and the request's win over them, in that order.",
    )  # fmt: skip


class RoleEntry(Strict):
    """A name a request may ask for instead of a model, and how it is answered."""

    strategy: Strategy = Field(
        default="fallback",
        description="fallback: `model`, then each of `fallbacks` in turn; cheapest-capable: "
        "of `candidates`, those that can serve the request, cheapest worst case first.",
    )
    model: Name | None = None
    fallbacks: list[Name] = Field(
        default_factory=list, description="Models, or other fallback roles, tried in order."
    )
    candidates: list[Name] = Field(default_factory=list)
    requires: Capabilities = Field(default_factory=Capabilities)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_strategy(self) -> Self:
        if self.strategy == "fallback":
            if self.model is None:
                raise ValueError("a fallback role needs a model")
            if self.candidates:
                raise ValueError("candidates belong to strategy cheapest-capable")
        else:
            if not self.candidates:
                raise ValueError("strategy cheapest-capable needs candidates")
            if self.model is not None or self.fallbacks:
                raise ValueError(
                    "strategy cheapest-capable takes candidates, not model or fallbacks: the "
                    "candidates left are tried cheapest first"
                )
        return self

    @property
    def names(self) -> list[str]:
        """The names it lists, in order: model and fallbacks, or candidates."""
        return [self.model, *self.fallbacks] if self.model else list(self.candidates)
