"""The provider call: litellm.acompletion with llmbus's retries, its reply and its cost.

The only module of the completion service that calls a model. What a name resolves to, its
prices and limits come from the catalog (llmbus.shared.catalog), which calls nothing.
"""

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import litellm

from llmbus.services.completion.answer import ModelReply, token_usage
from llmbus.services.completion.errors import (
    ModelCallFailed,
    backoff_s,
    classify,
    is_retryable,
    provider_detail,
    retry_after_s,
)
from llmbus.services.completion.sim import register_sim_provider
from llmbus.shared.catalog import ModelCatalog, Route, UnknownModelError
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.routing.health import Health
from llmbus.shared.settings import Settings

log = logging.getLogger(__name__)

# What a request may set. Anything else (api_base, api_key, headers, ...) could redirect the call,
# with our provider key, to another server: such settings belong in the model catalog.
REQUEST_PARAMS = frozenset(
    {
        "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "stop", "seed",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
        "user", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
        "function_call", "reasoning_effort", "thinking", "verbosity", "modalities",
        "prediction", "audio", "web_search_options", "service_tier", "safety_identifier",
        "prompt_cache_key",
    }
)  # fmt: skip


def keep_contents_out_of_litellm_logs() -> None:
    """litellm's own DEBUG and INFO logs print the messages; its exceptions may quote them."""
    litellm.turn_off_message_logging = True
    litellm.redact_messages_in_exceptions = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)


class ModelGateway:
    def __init__(self, settings: Settings, catalog: ModelCatalog) -> None:
        register_sim_provider()
        if settings.completion.privacy == "metadata_only":
            keep_contents_out_of_litellm_logs()
        self.catalog = catalog
        # which models this worker passes over for now: the credential check and 429s say
        self.health = Health()
        self._num_retries = settings.completion.num_retries
        self._timeout_s = settings.completion.timeout_s
        # every key the catalog names: a provider may echo another model's key, and an
        # api_key_env need not be named like a secret (_KEY, _TOKEN, ...) to hold one
        self._key_envs = {entry.api_key_env for entry in settings.models if entry.api_key_env}
        self._unpriced: set[str] = set()

    def route(self, model: str) -> Route:
        try:
            return self.catalog.resolve(model)
        except UnknownModelError as unknown:
            raise ModelCallFailed(unknown.error_type, unknown.message, retryable=False) from None

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        base: Mapping[str, Any] | None = None,
    ) -> ModelReply:
        """Call `model`. `base`: the configuration's parameters (defaults, the model's, the
        role's; routing merges them), else the model's own; the request's `params` win."""
        route = self.route(model)
        kwargs = self.call_kwargs(route, messages, params, route.params if base is None else base)
        started = time.perf_counter()
        response = await self.call_with_retries(route, kwargs, started)
        if not isinstance(response, litellm.ModelResponse):
            raise ModelCallFailed(
                ErrorType.internal,
                f"litellm returned {type(response).__name__} for a non-streaming call",
                retryable=False,
                provider=route.provider,
            )
        return ModelReply(
            content=response.choices[0].message.content or "",
            finish_reason=response.choices[0].finish_reason,
            provider=route.provider,
            model=model,
            usage=token_usage(getattr(response, "usage", None)),
            cost_usd=self.cost(route, response),
            latency_ms=(time.perf_counter() - started) * 1000,
            price_version=self.price_version(model),
        )

    def call_kwargs(
        self,
        route: Route,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        base: Mapping[str, Any],
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
        kwargs: dict[str, Any] = {**base}
        kwargs.update((k, v) for k, v in params.items() if v is not None)
        kwargs["model"] = route.target
        kwargs["messages"] = messages
        kwargs["timeout"] = self._timeout_s
        # llmbus retries (see call_with_retries), so both litellm layers are switched off: its
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

    async def call_with_retries(self, route: Route, kwargs: dict[str, Any], started: float) -> Any:
        """litellm.acompletion, retried as llmbus retries: a response, or a stream to read."""
        attempt = 0
        while True:
            try:
                return await litellm.acompletion(**kwargs)
            except Exception as exc:
                failure = self.failure(route, exc, attempt, kwargs.get("api_key"), started)
                pause = backoff_s(attempt, exc) if failure.retryable else None
                if pause is None or attempt >= self._num_retries:
                    raise failure from None
                attempt += 1
                await asyncio.sleep(pause)

    def failure(
        self, route: Route, exc: Exception, attempt: int, api_key: str | None, started: float
    ) -> ModelCallFailed:
        error_type = classify(exc)
        attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
        keys = [api_key, *(os.environ.get(name) for name in self._key_envs)]
        message = f"{route.name} ({route.provider}, {attempts}): {provider_detail(exc, keys)}"
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
            retry_after_s=retry_after_s(exc),
        )

    def price_version(self, model: str) -> str | None:
        """The version of the price this worker charges `model` at (None: it has none)."""
        listed = self.catalog.list_price(model)
        return listed.price.version if listed.priced else None

    def cost(self, route: Route, response: litellm.ModelResponse) -> float:
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
