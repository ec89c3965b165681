"""Which models may answer a request, in the order they are tried, and with what parameters.

A request names a model (tried alone), a role, or neither (the default role). A fallback role
tries its chain in order; a cheapest-capable role keeps the candidates that can serve the
request and tries them cheapest worst case first. Models this worker passes over for now
(Health) are left out with their reason, which a `no_capable_model` failure lists.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmbus.shared.catalog import ModelCatalog, UnknownModelError
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.errors import LlmbusError
from llmbus.shared.routing.chains import chains
from llmbus.shared.routing.config import Capabilities, Strategy
from llmbus.shared.routing.health import Health
from llmbus.shared.settings import Settings


class RoutingError(LlmbusError):
    """The request cannot be routed: it names no role that exists, or no model can serve it."""

    error_type: ErrorType  # a completion's error type, not an ErrorReply's

    def __init__(self, error_type: ErrorType, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class Plan:
    """What a request asks for: a role's chain, or the one model it names."""

    role: str | None
    strategy: Strategy | None  # None: a model named directly, tried alone
    models: tuple[str, ...]
    requires: Capabilities = field(default_factory=Capabilities)


@dataclass(frozen=True)
class Choice:
    """The models to try, in order, and why the others were left out."""

    models: list[str]
    excluded: dict[str, str]


class Router:
    def __init__(self, settings: Settings, catalog: ModelCatalog, health: Health) -> None:
        self.settings = settings
        self.catalog = catalog
        self.health = health
        self.chains = chains(settings.roles)  # a fallback cycle stops the start

    def plan(self, model: str | None, role: str | None) -> Plan:
        """The models a request may go to; RoutingError when it names a model no provider
        serves, or a role that does not exist."""
        if model is not None:
            try:
                self.catalog.resolve(model)
            except UnknownModelError as unknown:
                raise RoutingError(unknown.error_type, unknown.message) from None
            return Plan(None, None, (model,))
        role = role or self.settings.default_role
        if role is None:
            raise RoutingError(
                ErrorType.invalid_request,
                "the request names neither a model nor a role, and no default_role is configured",
            )
        entry = self.settings.roles.get(role)
        if entry is None:
            known = ", ".join(sorted(self.settings.roles)) or "none are configured"
            raise RoutingError(
                ErrorType.invalid_request, f"no role named {role!r} (roles: {known})"
            )
        return Plan(role, entry.strategy, tuple(self.chains[role]), entry.requires)

    def base_params(self, plan: Plan, model: str) -> dict[str, Any]:
        """Parameters from the configuration, later winning: defaults < the model's < the
        role's. The request's win over all of them (the gateway adds them)."""
        role = self.settings.roles.get(plan.role) if plan.role else None
        return {
            **self.settings.defaults.params,
            **self.catalog.resolve(model).params,  # the catalog entry's, cached with its route
            **(role.params if role else {}),
        }

    def choose(
        self, plan: Plan, messages: list[dict[str, str]], params: Mapping[str, Any]
    ) -> Choice:
        """The models to try for this request; RoutingError(no_capable_model) when none is."""
        if plan.strategy is None:
            return Choice(list(plan.models), {})
        needs = needed(plan.requires, params) if plan.strategy == "cheapest-capable" else NONE
        prompt = Prompt(self.catalog, messages, plan.models[0])
        replies: dict[str, int] = {}
        excluded: dict[str, str] = {}
        for model in plan.models:
            reason = self.health.excluded(model)
            if reason is None:
                try:
                    replies[model] = self.catalog.reply_cap(
                        model, self.max_tokens(plan, model, params)
                    )
                    reason = self._unfit(model, prompt, replies[model], needs)
                except UnknownModelError as unknown:
                    reason = unknown.message
            if reason is not None:
                excluded[model] = reason
        models = [m for m in plan.models if m not in excluded]
        if not models:
            raise no_capable_model(plan, excluded)
        if plan.strategy == "cheapest-capable":
            models = self._cheapest_first(models, prompt, replies)
        return Choice(models, excluded)

    def _cheapest_first(
        self, models: list[str], prompt: "Prompt", replies: Mapping[str, int]
    ) -> list[str]:
        """By worst case at list price: prompt tokens x input price + reply cap x output price.
        Each is a line in the prompt's tokens; when their order is the same with no prompt
        tokens and with the bound, no count can change it, and none is made."""
        lines = {}
        for model in models:
            price = self.catalog.list_price(model)
            lines[model] = (price.input_per_token, replies[model] * price.output_per_token)

        def order(tokens: int) -> list[str]:
            # stable: ties keep the configured order
            return sorted(models, key=lambda m: tokens * lines[m][0] + lines[m][1])

        at_least, at_most = order(0), order(prompt.bound)
        return at_least if at_least == at_most else order(prompt.tokens())

    def max_tokens(self, plan: Plan, model: str, params: Mapping[str, Any]) -> int | None:
        asked = params.get("max_tokens") or self.base_params(plan, model).get("max_tokens")
        return asked if isinstance(asked, int) else None

    def _unfit(self, model: str, prompt: "Prompt", reply: int, needs: frozenset[str]) -> str | None:
        missing = needs - self.catalog.capabilities(model) if needs else needs
        if missing:
            return f"lacks {', '.join(sorted(missing))}"
        window = self.catalog.context_window(model)
        if window is None or prompt.bound + reply <= window:
            return None  # fits even if every byte were a token: no need to count
        if prompt.tokens() + reply > window:
            return f"context window {window} < {prompt.tokens()} prompt + {reply} reply tokens"
        return None


class Prompt:
    """A request's prompt size: a bound that costs nothing, and its tokens counted at most once
    (with the first model's tokenizer: routing compares models, admission counts exactly)."""

    # per message: the chat format's framing and the role (litellm counts 3 to 4 tokens)
    PER_MESSAGE = 8
    PRIMING = 8

    def __init__(self, catalog: ModelCatalog, messages: list[dict[str, str]], model: str) -> None:
        self.catalog, self.messages, self.model = catalog, messages, model
        # a BPE token is at least one byte, so a prompt has no more tokens than bytes
        text_bytes = sum(len(str(m.get("content", "")).encode()) for m in messages)
        self.bound = text_bytes + self.PER_MESSAGE * len(messages) + self.PRIMING
        self._tokens: int | None = None

    def tokens(self) -> int:
        if self._tokens is None:
            self._tokens = self.catalog.count_tokens(self.model, self.messages)
        return self._tokens


NONE: frozenset[str] = frozenset()


def needed(required: Capabilities, params: Mapping[str, Any]) -> frozenset[str]:
    """What the role requires, and what the request itself uses."""
    uses = {
        "tools": bool(params.get("tools") or params.get("functions")),
        "json_mode": bool(params.get("response_format")),
    }
    return frozenset(name for name, wanted in required if wanted or uses.get(name))


def no_capable_model(plan: Plan, excluded: Mapping[str, str]) -> RoutingError:
    reasons = "; ".join(f"{model}: {why}" for model, why in excluded.items())
    # only cooling down: the same request may well be served a little later
    cooling = all(why.startswith("cooling down") for why in excluded.values())
    return RoutingError(
        ErrorType.no_capable_model,
        f"no model of role {plan.role!r} can serve this request ({reasons})",
        retryable=cooling,
    )
