"""The model catalog: which provider serves a model name, at what list price, with what context
window and reply cap, how many tokens a prompt counts, and the most a call may cost.

Offline: it reads litellm's bundled price map and tokenizer and calls nothing. Calling a model
(and the simulated provider that answers `llmbus-sim/...`) is the completion service's alone.
"""

import os

# Before the first `import litellm`: offline, fetching the remote price map costs seconds.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from functools import cached_property
from typing import Any

import litellm

from llmbus.shared.contracts.budget import COST_QUANTUM
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.errors import LlmbusError
from llmbus.shared.pricing import Price
from llmbus.shared.sections import ModelEntry
from llmbus.shared.settings import Settings

log = logging.getLogger(__name__)

# Token counts must never reach for the network (HuggingFace tokenizers); tiktoken is bundled.
litellm.disable_hf_tokenizer_download = True
# litellm prints "Give Feedback / Get Help" banners to stdout when it cannot map a name.
litellm.suppress_debug_info = True

SIM_PROVIDER = "llmbus-sim"
# The built-in offline models: their list prices and limits, as litellm's price map spells them.
SIM_MODELS: dict[str, dict[str, Any]] = {
    f"{SIM_PROVIDER}/small": {
        "input_cost_per_token": 0.50e-6,
        "output_cost_per_token": 1.50e-6,
        "max_input_tokens": 32_768,
        "max_output_tokens": 4_096,
        "max_tokens": 4_096,
        "cache_read_input_token_cost": 0.05e-6,
        "litellm_provider": SIM_PROVIDER,
        "mode": "chat",
        "supports_response_schema": True,
    },
    f"{SIM_PROVIDER}/large": {
        "input_cost_per_token": 3.00e-6,
        "output_cost_per_token": 15.00e-6,
        "max_input_tokens": 200_000,
        "max_output_tokens": 8_192,
        "max_tokens": 8_192,
        "cache_read_input_token_cost": 0.30e-6,
        "litellm_provider": SIM_PROVIDER,
        "mode": "chat",
        "supports_response_schema": True,
        "supports_function_calling": True,
        "supports_vision": True,
    },
}

# Model names come from requests: caches keyed by them are capped so odd names cannot grow them.
CACHE_SIZE = 4096
# Output tokens assumed when a request sets no max_tokens and nothing says the model's output
# limit. A budget needs some finite bound before the call; 4096 is the output cap most chat
# models shipped with (and the sim small's), large enough to cover typical replies, small enough
# not to refuse requests a nearly spent budget could still afford. Replies longer than this are
# still settled at their true cost afterwards; only the reservation may fall short.
DEFAULT_OUTPUT_TOKENS = 4096


class UnknownModelError(LlmbusError):
    """No provider serves this model name."""

    error_type = ErrorType.unknown_model

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# How one model name is called: worked out once, then reused on every request.
@dataclass(frozen=True)
class Route:
    name: str
    target: str
    provider: str
    api_base: str | None = None
    api_key_env: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


# What a worst-case estimate needs to know about one model, and what a call is priced at.
@dataclass(frozen=True)
class ListPrice:
    input_per_token: Decimal
    output_per_token: Decimal
    output_limit: int | None
    priced: bool
    # litellm bills cached prompt tokens at the cache price, at 0 when the model has none
    cached_per_token: Decimal = Decimal(0)

    @cached_property  # a cached ListPrice is read on every call: its Price (and version) once
    def price(self) -> Price:
        return Price(self.input_per_token, self.output_per_token, self.cached_per_token)


def per_token(value: Any) -> Decimal | None:
    # Through str: 5e-07 becomes Decimal('5E-7'), not the float's binary expansion.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return max(Decimal(str(value)), Decimal(0))


def positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return int(value) if value >= 1 else None


def price_entry(entry: ModelEntry, provider: str) -> dict[str, Any]:
    prices: dict[str, Any] = {
        "litellm_provider": provider,
        "mode": "chat",
        "input_cost_per_token": entry.input_cost_per_token,
        "output_cost_per_token": entry.output_cost_per_token,
        # Without a cache price litellm bills cached tokens at 0; the input price never
        # underestimates, which budgets need.
        "cache_read_input_token_cost": entry.input_cost_per_token,
        "max_input_tokens": entry.max_input_tokens,
        "max_output_tokens": entry.max_output_tokens,
    }
    return {k: v for k, v in prices.items() if v is not None}


def has_prices(entry: ModelEntry) -> bool:
    return entry.input_cost_per_token is not None or entry.output_cost_per_token is not None


def provider_of(target: str, api_base: str | None) -> str:
    """The litellm provider of a target name; the sim's is known here without registering it."""
    if target.startswith(f"{SIM_PROVIDER}/"):
        return SIM_PROVIDER
    return litellm.get_llm_provider(target, api_base=api_base)[1]


def model_info(route: Route) -> Mapping[str, Any]:
    try:
        return litellm.get_model_info(route.target, custom_llm_provider=route.provider)
    except Exception:
        # Not mapped (or litellm cannot split the name): the raw map may still hold the target.
        info = litellm.model_cost.get(route.target)
        return info if isinstance(info, Mapping) else {}


class ModelCatalog:
    """The configured models (settings.models), the sim models, and any name litellm maps."""

    def __init__(self, settings: Settings) -> None:
        self._entries = {entry.name: entry for entry in settings.models}
        self._routes: dict[str, Route] = {}
        self._prices: dict[str, ListPrice] = {}
        self._capabilities: dict[str, frozenset[str]] = {}
        self._windows: dict[str, int | None] = {}
        litellm.register_model(SIM_MODELS)
        for entry in settings.models:
            if has_prices(entry):
                self._register_prices(entry)

    def _register_prices(self, entry: ModelEntry) -> None:
        try:
            provider = provider_of(entry.target, entry.api_base)
        except Exception:
            log.warning("model %s: litellm cannot map %r to a provider", entry.name, entry.target)
            return
        litellm.register_model({entry.target: price_entry(entry, provider)})

    def resolve(self, model: str) -> Route:
        """How `model` is called; UnknownModelError when no provider serves it."""
        route = self._routes.get(model)
        if route is None:
            route = self._new_route(model)
            if len(self._routes) < CACHE_SIZE:
                self._routes[model] = route
        return route

    def _new_route(self, model: str) -> Route:
        entry = self._entries.get(model)
        target = entry.target if entry else model
        try:
            provider = provider_of(target, entry.api_base if entry else None)
        except Exception:
            raise UnknownModelError(
                f"unknown model {model!r}: litellm cannot tell which provider serves it. "
                "Name it provider/model (e.g. openai/gpt-4o-mini) or add it to the models catalog."
            ) from None
        if provider == SIM_PROVIDER and target not in SIM_MODELS:
            raise UnknownModelError(
                f"unknown model {model!r}: the simulated models are {', '.join(SIM_MODELS)}"
            )
        if entry is None:
            return Route(name=model, target=target, provider=provider)
        return Route(model, target, provider, entry.api_base, entry.api_key_env, dict(entry.params))

    def warm_up(self) -> None:
        """Load the tokenizer now: litellm loads it on the first count, which would otherwise
        add ~0.25 s to the first request a process admits or trims."""
        litellm.token_counter(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    def count_tokens(self, model: str, messages: list[dict[str, str]]) -> int:
        return int(litellm.token_counter(model=self.resolve(model).target, messages=messages))

    def context_window(self, model: str) -> int | None:
        """The most prompt tokens the model takes; None when unknown."""
        if model in self._windows:
            return self._windows[model]
        entry = self._entries.get(model)
        if entry is not None and entry.max_input_tokens:
            window: int | None = entry.max_input_tokens
        else:
            window = positive_int(model_info(self.resolve(model)).get("max_input_tokens"))
        if len(self._windows) < CACHE_SIZE:
            self._windows[model] = window  # litellm's lookup costs ~0.02 ms: routing asks often
        return window

    def capabilities(self, model: str) -> frozenset[str]:
        """What it offers of tools, vision and JSON mode (routing.config.Capabilities' names):
        the catalog entry's where it says, else litellm's map (unknown to it: not offered)."""
        found = self._capabilities.get(model)
        if found is None:
            entry = self._entries.get(model)
            info = model_info(self.resolve(model))

            def offered(field: str, key: str) -> bool:
                override = getattr(entry, field) if entry is not None else None
                return bool(info.get(key)) if override is None else bool(override)

            flags = {
                "tools": offered("supports_tools", "supports_function_calling"),
                "vision": offered("supports_vision", "supports_vision"),
                "json_mode": offered("supports_json_mode", "supports_response_schema"),
            }
            found = frozenset(name for name, on in flags.items() if on)
            if len(self._capabilities) < CACHE_SIZE:
                self._capabilities[model] = found
        return found

    def output_limit(self, model: str) -> int | None:
        """The most tokens the model writes in one reply; None when unknown."""
        return self.list_price(model).output_limit

    def reply_cap(self, model: str, max_tokens: int | None) -> int:
        """The reply length a reservation assumes: max_tokens within the model's output limit,
        else that limit, else DEFAULT_OUTPUT_TOKENS. The worker sends it as max_tokens, so the
        call cannot cost more than was reserved."""
        limit = self.output_limit(model)
        if max_tokens is None:
            return limit or DEFAULT_OUTPUT_TOKENS
        return max(min(max_tokens, limit or max_tokens), 0)

    def worst_case_cost(
        self, model: str, messages: list[dict[str, str]], max_tokens: int | None
    ) -> Decimal:
        """The most a call may cost at list price, for a budget to reserve before making it.

        Prompt tokens are counted offline; the reply is assumed to run to reply_cap. Rounded up
        to COST_QUANTUM. A model without a known price costs Decimal(0): no budget bounds it.
        """
        price = self.list_price(model)
        if not price.priced:
            return Decimal(0)
        output_tokens = self.reply_cap(model, max_tokens)
        prompt_tokens = self.count_tokens(model, messages)
        cost = prompt_tokens * price.input_per_token + output_tokens * price.output_per_token
        return max(cost, Decimal(0)).quantize(COST_QUANTUM, rounding=ROUND_CEILING)

    def known_models(self) -> list[str]:
        """The names this catalog prices without a request naming them: configured and sim."""
        return [*self._entries, *(name for name in SIM_MODELS if name not in self._entries)]

    def set_price(self, model: str, price: Price) -> None:
        """Charge `model` at `price` from now on (a price set in the usage service's book)."""
        route = self.resolve(model)
        litellm.register_model({route.target: {
            "litellm_provider": route.provider, "mode": "chat",
            "input_cost_per_token": float(price.input_per_token),
            "output_cost_per_token": float(price.output_per_token),
            "cache_read_input_token_cost": float(price.cached_per_token),
        }})  # fmt: skip
        self._prices.pop(model, None)  # read again from litellm's map, as it now says

    def list_price(self, model: str) -> ListPrice:
        price = self._prices.get(model)
        if price is None:
            route = self.resolve(model)
            price = self._look_up_price(route)
            if len(self._prices) < CACHE_SIZE:
                self._prices[model] = price
            if not price.priced:
                # once per name (while the cache has room): the price is cached with it
                log.warning(
                    "litellm has no price for %s (%s); budgets reserve 0 for it and cannot bound "
                    "its spending. Set input_cost_per_token and output_cost_per_token on it in "
                    "the catalog.",
                    route.name,
                    route.target,
                )
        return price

    def _look_up_price(self, route: Route) -> ListPrice:
        info = model_info(route)
        input_price = per_token(info.get("input_cost_per_token"))
        output_price = per_token(info.get("output_cost_per_token"))
        entry = self._entries.get(route.name)
        output_limit = (
            (entry.max_output_tokens if entry else None)
            or positive_int(info.get("max_output_tokens"))
            or positive_int(info.get("max_tokens"))
        )
        return ListPrice(
            input_per_token=input_price or Decimal(0),
            output_per_token=output_price or Decimal(0),
            output_limit=output_limit,
            priced=input_price is not None or output_price is not None,
            cached_per_token=per_token(info.get("cache_read_input_token_cost")) or Decimal(0),
        )
