"""How a provider's key is checked without spending tokens: which variable holds it, and the
one HTTP call (listing the provider's models) that tells whether it is accepted."""

import os
from dataclasses import dataclass
from typing import Literal

import aiohttp
import litellm

from llmbus.shared.catalog import Route

Status = Literal["ok", "missing key", "rejected", "unreachable", "unchecked"]

# Providers that answer GET {api_base}/models with a bearer key, besides litellm's own list of
# OpenAI-compatible ones (litellm.openai_compatible_providers).
BEARER_PROVIDERS = frozenset({"openai", "text-completion-openai", "mistral", "openrouter"})
DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "text-completion-openai": "https://api.openai.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
# The variables litellm reads a provider's key from, where it is not PROVIDER_API_KEY.
STANDARD_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "text-completion-openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openrouter": ("OPENROUTER_API_KEY", "OR_API_KEY"),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY"),
    "perplexity": ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"),
}
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Probe:
    """The one HTTP call that checks a key: models sharing provider, base and key share it."""

    url: str
    headers: tuple[tuple[str, str], ...]


def key_names(route: Route) -> list[str]:
    """The variables the model's key is read from, in the order they are tried."""
    if route.api_key_env:
        return [route.api_key_env]
    names = list(STANDARD_KEYS.get(route.provider, ()))
    try:
        missing = litellm.validate_environment(model=route.target, api_base=route.api_base)
        names += [name for name in missing.get("missing_keys", []) if name not in names]
    except Exception:
        pass  # litellm cannot map the name: the guesses below stand
    for name in (
        f"{route.provider.upper()}_API_KEY",
        f"{route.provider.replace('_', '').upper()}_API_KEY",
    ):
        if name not in names:
            names.append(name)
    return names


def provider_key(route: Route) -> str | None:
    """The key a call to this model sends; None when none is set."""
    for name in key_names(route):
        value = os.environ.get(name)
        if value:
            return value
        if route.api_key_env:
            return None  # the gateway sends this variable's key and no other
    try:  # an OpenAI-compatible provider: litellm reads its key (from env or a secret manager)
        dynamic_key = litellm.get_llm_provider(route.target, api_base=route.api_base)[2]
    except Exception:
        return None
    return dynamic_key or None


def default_base(route: Route) -> str | None:
    if route.api_base:
        return route.api_base
    if route.provider in DEFAULT_BASES:
        return DEFAULT_BASES[route.provider]
    try:
        return litellm.get_llm_provider(route.target)[3] or None
    except Exception:
        return None


def probe_for(route: Route, key: str) -> Probe | None:
    """How the key of this model is checked; None when no cheap, generic call exists."""
    base = default_base(route)
    if base is None:
        return None
    base = base.rstrip("/")
    if route.provider == "anthropic":
        url = f"{base.removesuffix('/v1')}/v1/models"
        return Probe(url, (("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)))
    if route.provider == "gemini":
        # the key in a header, never in the URL (an error would quote the URL)
        return Probe(f"{base.removesuffix('/v1beta')}/v1beta/models", (("x-goog-api-key", key),))
    if route.provider in BEARER_PROVIDERS or route.provider in litellm.openai_compatible_providers:
        return Probe(f"{base}/models", (("Authorization", f"Bearer {key}"),))
    return None


def outcome_of_status(status: int) -> tuple[Status, str]:
    if 200 <= status < 300:
        return "ok", ""
    if status in (401, 403):
        return "rejected", f"HTTP {status}"
    if status >= 500:
        return "unreachable", f"HTTP {status}"
    # 404 (no listing there), 429, ...: the key was neither accepted nor refused
    return "unchecked", f"HTTP {status}"


def outcome_of_error(exc: BaseException) -> tuple[Status, str]:
    # the class name only: an exception's text may quote a URL or a header
    if isinstance(exc, TimeoutError):
        return "unreachable", "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "unreachable", "cannot connect"
    return "unreachable", type(exc).__name__
