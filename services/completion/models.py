"""The litellm adapter: the only module of the completion service that imports litellm."""

import os

# Before the first `import litellm`: offline, fetching the remote price map costs seconds.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

import litellm

from llmbus.services.completion.sim import PROVIDER as SIM_PROVIDER
from llmbus.services.completion.sim import SIM_MODELS, register_sim_provider
from llmbus.shared.contracts.budget import COST_QUANTUM
from llmbus.shared.contracts.completion import ErrorType, TokenUsage
from llmbus.shared.errors import LlmbusError
from llmbus.shared.secrets import scrub
from llmbus.shared.settings import ModelEntry, Settings

log = logging.getLogger(__name__)

# Token estimates must never reach for the network (HuggingFace tokenizers); tiktoken is bundled.
litellm.disable_hf_tokenizer_download = True
# litellm prints "Give Feedback / Get Help" banners to stdout on every failure.
litellm.suppress_debug_info = True

RETRYABLE = frozenset({ErrorType.rate_limited, ErrorType.timeout, ErrorType.provider_error})
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# A provider asking for a longer pause than this is better served by redelivery later.
MAX_RETRY_AFTER_S = 60.0
ROUTE_CACHE_SIZE = 4096
MAX_MESSAGE_CHARS = 500
# Output tokens assumed when a request sets no max_tokens and litellm knows no output limit for
# the model. A budget needs some finite bound before the call; 4096 is the output cap most chat
# models shipped with (and the sim small's), large enough to cover typical replies, small enough
# not to refuse requests a nearly spent budget could still afford. Replies longer than this are
# still settled at their true cost afterwards; only the reservation may fall short.
DEFAULT_OUTPUT_TOKENS = 4096

# What a request may set. Anything else (api_base, api_key, headers, ...) could redirect the call,
# with our provider key, to another server: such settings belong in the model catalog.
REQUEST_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "reasoning_effort",
        "thinking",
        "verbosity",
        "modalities",
        "prediction",
        "audio",
        "web_search_options",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
    }
)

LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?")
LITELLM_RETRIED = re.compile(r"\s*LiteLLM Retried: \d+ times?.*$", re.DOTALL)


@dataclass(frozen=True)
class ModelReply:
    content: str
    finish_reason: str | None
    provider: str
    model: str
    usage: TokenUsage
    cost_usd: float
    latency_ms: float


class ModelCallFailed(LlmbusError):
    error_type: ErrorType  # a completion's error type, not an ErrorReply's

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        retryable: bool,
        provider: str | None = None,
        latency_ms: float = 0.0,
    ) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.retryable = retryable
        self.provider = provider
        self.latency_ms = latency_ms


def keep_contents_out_of_litellm_logs() -> None:
    """litellm's own DEBUG and INFO logs print the messages; its exceptions may quote them."""
    litellm.turn_off_message_logging = True
    litellm.redact_messages_in_exceptions = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)


# How one model name is called: worked out once, then reused on every request.
@dataclass(frozen=True)
class Route:
    name: str
    target: str
    provider: str
    api_base: str | None = None
    api_key_env: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def provider_detail(exc: BaseException, keys: Iterable[str | None]) -> str:
    # str(exc) is litellm's message with the provider's body in it; the response headers are
    # not (they stay on exc.litellm_response_headers, read only for retry-after).
    text = LITELLM_RETRIED.sub("", LITELLM_PREFIX.sub("", str(exc).strip()))
    text = scrub(text, keys)
    text = text or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def names_unknown_model(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("llm provider not provided", "model not found", "model_not_found")
    )


def classify(exc: BaseException) -> ErrorType:
    # Order matters: litellm's subclasses (ContextWindowExceeded < BadRequest) come first.
    if isinstance(exc, litellm.Timeout):
        return ErrorType.timeout
    if isinstance(exc, litellm.RateLimitError):
        return ErrorType.rate_limited
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return ErrorType.authentication
    if isinstance(exc, litellm.NotFoundError):
        return ErrorType.unknown_model
    if isinstance(exc, litellm.ContextWindowExceededError):
        return ErrorType.context_window_exceeded
    if isinstance(exc, litellm.ContentPolicyViolationError):
        return ErrorType.content_filtered
    if isinstance(exc, litellm.BadRequestError | litellm.UnprocessableEntityError):
        return ErrorType.unknown_model if names_unknown_model(exc) else ErrorType.bad_request
    if isinstance(
        exc,
        litellm.InternalServerError
        | litellm.ServiceUnavailableError
        | litellm.BadGatewayError
        | litellm.APIConnectionError,
    ):
        return ErrorType.provider_error
    if isinstance(exc, litellm.APIError):
        return ErrorType.provider_error
    return ErrorType.internal


def is_retryable(error_type: ErrorType, exc: BaseException) -> bool:
    if error_type is ErrorType.provider_error and isinstance(exc, litellm.APIError):
        # A bare APIError is retried only when the provider said 5xx (or gave no status).
        status = status_of(exc)
        return status is None or status >= 500
    return error_type in RETRYABLE


def retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def backoff_s(attempt: int, exc: BaseException) -> float | None:
    # None: the provider asked for a longer pause than is worth holding a worker slot for.
    asked = retry_after_s(exc)
    if asked is not None:
        return asked if asked <= MAX_RETRY_AFTER_S else None
    return min(FIRST_BACKOFF_S * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.75, 1.0)


def cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return cached if isinstance(cached, int) else 0


def token_usage(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached_tokens(usage),
        total_tokens=int(getattr(usage, "total_tokens", 0) or 0) or prompt + completion,
    )


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


# What a worst-case estimate needs to know about one model, looked up once in litellm's price map.
@dataclass(frozen=True)
class ListPrice:
    input_per_token: Decimal
    output_per_token: Decimal
    output_limit: int | None
    priced: bool


def per_token(value: Any) -> Decimal | None:
    # Through str: 5e-07 becomes Decimal('5E-7'), not the float's binary expansion.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return max(Decimal(str(value)), Decimal(0))


def positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return int(value) if value >= 1 else None


def model_info(route: Route) -> Mapping[str, Any]:
    try:
        return litellm.get_model_info(route.target, custom_llm_provider=route.provider)
    except Exception:
        # Not mapped (or litellm cannot split the name): the raw map may still hold the target.
        info = litellm.model_cost.get(route.target)
        return info if isinstance(info, Mapping) else {}


def list_price(route: Route) -> ListPrice:
    info = model_info(route)
    input_price = per_token(info.get("input_cost_per_token"))
    output_price = per_token(info.get("output_cost_per_token"))
    output_limit = positive_int(info.get("max_output_tokens")) or positive_int(
        info.get("max_tokens")
    )
    return ListPrice(
        input_per_token=input_price or Decimal(0),
        output_per_token=output_price or Decimal(0),
        output_limit=output_limit,
        priced=input_price is not None or output_price is not None,
    )


def has_prices(entry: ModelEntry) -> bool:
    return entry.input_cost_per_token is not None or entry.output_cost_per_token is not None


class ModelGateway:
    def __init__(self, settings: Settings) -> None:
        register_sim_provider()
        if settings.completion.privacy == "metadata_only":
            keep_contents_out_of_litellm_logs()
        self._num_retries = settings.completion.num_retries
        self._timeout_s = settings.completion.timeout_s
        self._catalog = {entry.name: entry for entry in settings.models}
        self._routes: dict[str, Route] = {}
        self._unpriced: set[str] = set()
        self._prices: dict[str, ListPrice] = {}
        self._unbounded: set[str] = set()
        for entry in settings.models:
            if has_prices(entry):
                self._register_prices(entry)

    def _register_prices(self, entry: ModelEntry) -> None:
        try:
            provider = litellm.get_llm_provider(entry.target, api_base=entry.api_base)[1]
        except Exception:
            log.warning("model %s: litellm cannot map %r to a provider", entry.name, entry.target)
            return
        litellm.register_model({entry.target: price_entry(entry, provider)})

    def resolve(self, model: str) -> tuple[str, str]:
        route = self._route(model)
        return route.target, route.provider

    def _route(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is None:
            route = self._new_route(model)
            # Model names come from requests: cap the cache so odd names cannot grow it forever.
            if len(self._routes) < ROUTE_CACHE_SIZE:
                self._routes[model] = route
        return route

    def _new_route(self, model: str) -> Route:
        entry = self._catalog.get(model)
        target = entry.target if entry else model
        api_base = entry.api_base if entry else None
        try:
            provider = litellm.get_llm_provider(target, api_base=api_base)[1]
        except Exception:
            raise ModelCallFailed(
                ErrorType.unknown_model,
                f"unknown model {model!r}: litellm cannot tell which provider serves it. "
                "Name it provider/model (e.g. openai/gpt-4o-mini) or add it to the models catalog.",
                retryable=False,
            ) from None
        if provider == SIM_PROVIDER and target not in SIM_MODELS:
            raise ModelCallFailed(
                ErrorType.unknown_model,
                f"unknown model {model!r}: the simulated models are {', '.join(SIM_MODELS)}",
                retryable=False,
            )
        if entry is None:
            return Route(name=model, target=target, provider=provider)
        return Route(
            name=model,
            target=target,
            provider=provider,
            api_base=entry.api_base,
            api_key_env=entry.api_key_env,
            params=dict(entry.params),
        )

    def warm_up(self) -> None:
        """Load the tokenizer now: litellm loads it on the first count, which would otherwise
        add ~0.25 s to the first request a process admits or trims."""
        litellm.token_counter(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    def estimate_prompt_tokens(self, model: str, messages: list[dict[str, str]]) -> int:
        return int(litellm.token_counter(model=self._route(model).target, messages=messages))

    def output_limit(self, model: str) -> int | None:
        """The most tokens litellm says the model writes in one reply; None when unknown."""
        return self._list_price(model).output_limit

    def reply_cap(self, model: str, max_tokens: int | None) -> int:
        """The reply length a reservation assumes: max_tokens within the model's output limit,
        else that limit, else DEFAULT_OUTPUT_TOKENS. The worker sends it as max_tokens, so the
        call cannot cost more than was reserved."""
        limit = self._list_price(model).output_limit
        if max_tokens is None:
            return limit or DEFAULT_OUTPUT_TOKENS
        return max(min(max_tokens, limit or max_tokens), 0)

    def worst_case_cost(
        self, model: str, messages: list[dict[str, str]], max_tokens: int | None
    ) -> Decimal:
        """The most a call may cost at list price, for a budget to reserve before making it.

        Prompt tokens are counted offline; the reply is assumed to run to max_tokens, else to the
        model's output limit, else to DEFAULT_OUTPUT_TOKENS. Rounded up to COST_QUANTUM. A model
        without a known price costs Decimal(0) here: a budget cannot bound it.
        """
        price = self._list_price(model)
        if not price.priced:
            return Decimal(0)
        output_tokens = self.reply_cap(model, max_tokens)
        prompt_tokens = self.estimate_prompt_tokens(model, messages)
        cost = prompt_tokens * price.input_per_token + output_tokens * price.output_per_token
        return max(cost, Decimal(0)).quantize(COST_QUANTUM, rounding=ROUND_CEILING)

    def _list_price(self, model: str) -> ListPrice:
        price = self._prices.get(model)
        if price is not None:
            return price
        route = self._route(model)
        price = list_price(route)
        if len(self._prices) < ROUTE_CACHE_SIZE:
            self._prices[model] = price
        if not price.priced and model not in self._unbounded:
            if len(self._unbounded) < ROUTE_CACHE_SIZE:
                self._unbounded.add(model)
            log.warning(
                "litellm has no price for %s (%s); budgets reserve 0 for it and cannot bound "
                "its spending. Set input_cost_per_token and output_cost_per_token on it in the "
                "catalog.",
                route.name,
                route.target,
            )
        return price

    async def complete(
        self, model: str, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> ModelReply:
        route = self._route(model)
        kwargs = self._call_kwargs(route, messages, params)
        started = time.perf_counter()
        response = await self._call_with_retries(route, kwargs, started)
        return ModelReply(
            content=response.choices[0].message.content or "",
            finish_reason=response.choices[0].finish_reason,
            provider=route.provider,
            model=model,
            usage=token_usage(getattr(response, "usage", None)),
            cost_usd=self._cost(route, response),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def _call_kwargs(
        self, route: Route, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> dict[str, Any]:
        refused = [name for name in params if name not in REQUEST_PARAMS]
        if refused:
            raise ModelCallFailed(
                ErrorType.bad_request,
                f"parameter(s) {', '.join(sorted(refused))} cannot be set by a request; "
                "set them on the model in the catalog",
                retryable=False,
                provider=route.provider,
            )
        kwargs: dict[str, Any] = {**route.params}
        kwargs.update((k, v) for k, v in params.items() if v is not None)
        kwargs["model"] = route.target
        kwargs["messages"] = messages
        kwargs["timeout"] = self._timeout_s
        # llmbus retries (see _call_with_retries), so both litellm layers are switched off: its
        # wrapper (num_retries, via tenacity) and the provider SDK underneath (max_retries).
        kwargs["num_retries"] = 0
        kwargs["max_retries"] = 0
        if route.api_base:
            kwargs["api_base"] = route.api_base
        if route.api_key_env:
            kwargs["api_key"] = self._api_key(route)
        return kwargs

    def _api_key(self, route: Route) -> str:
        assert route.api_key_env is not None
        key = os.environ.get(route.api_key_env)
        if not key:
            raise ModelCallFailed(
                ErrorType.authentication,
                f"model {route.name!r} takes its API key from ${route.api_key_env}, which is "
                "not set",
                retryable=False,
                provider=route.provider,
            )
        return key

    async def _call_with_retries(
        self, route: Route, kwargs: dict[str, Any], started: float
    ) -> litellm.ModelResponse:
        attempt = 0
        while True:
            try:
                response = await litellm.acompletion(**kwargs)
            except Exception as exc:
                failure = self._failure(route, exc, attempt, kwargs.get("api_key"), started)
                pause = backoff_s(attempt, exc) if failure.retryable else None
                if pause is None or attempt >= self._num_retries:
                    raise failure from None
                attempt += 1
                await asyncio.sleep(pause)
                continue
            if not isinstance(response, litellm.ModelResponse):
                raise ModelCallFailed(
                    ErrorType.internal,
                    f"litellm returned {type(response).__name__} for a non-streaming call",
                    retryable=False,
                    provider=route.provider,
                )
            return response

    def _failure(
        self,
        route: Route,
        exc: Exception,
        attempt: int,
        api_key: str | None,
        started: float,
    ) -> ModelCallFailed:
        error_type = classify(exc)
        attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
        detail = provider_detail(exc, [api_key, *self._catalog_keys()])
        message = f"{route.name} ({route.provider}, {attempts}): {detail}"
        if error_type is ErrorType.authentication:
            where = (
                route.api_key_env
                or f"{route.provider.upper()}_API_KEY (or the model's api_key_env)"
            )
            message += f" Check the API key in ${where}."
        return ModelCallFailed(
            error_type,
            message,
            retryable=is_retryable(error_type, exc),
            provider=route.provider,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def _catalog_keys(self) -> list[str | None]:
        """Every key the catalog names: a provider may echo another model's key, and an
        api_key_env need not be named like a secret (_KEY, _TOKEN, ...) to hold one."""
        names = {entry.api_key_env for entry in self._catalog.values() if entry.api_key_env}
        return [os.environ.get(name) for name in names]

    def _cost(self, route: Route, response: litellm.ModelResponse) -> float:
        # litellm has already run completion_cost for its own logging; pricing twice costs ~0.1 ms.
        priced = response._hidden_params.get("response_cost")
        if isinstance(priced, int | float):
            return float(priced)
        try:
            return float(litellm.completion_cost(completion_response=response))
        except Exception:
            if route.name not in self._unpriced:
                self._unpriced.add(route.name)
                log.warning(
                    "litellm has no price for %s (%s); its cost is recorded as 0. Set "
                    "input_cost_per_token and output_cost_per_token on it in the catalog.",
                    route.name,
                    route.target,
                )
            return 0.0
