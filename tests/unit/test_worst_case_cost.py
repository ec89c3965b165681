"""The worst-case cost a hard budget reserves before a call: list price, offline, no HTTP.

The catalog works it out; the gateway makes the call it bounds."""

import logging
import subprocess
import sys
from decimal import Decimal

import pytest

from llmbus.services.completion.gateway import ModelGateway
from llmbus.shared.catalog import DEFAULT_OUTPUT_TOKENS, SIM_MODELS, ModelCatalog
from llmbus.shared.sections import ModelEntry
from llmbus.shared.settings import Settings

SMALL = "llmbus-sim/small"
INPUT_PRICE = 1e-6
OUTPUT_PRICE = 2e-6
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What does a message bus do for LLM calls?"},
]


@pytest.fixture
def settings() -> Settings:
    # The api_base is never dialled: worst_case_cost makes no HTTP call.
    entries = [
        ModelEntry(
            name="fake-gpt",
            litellm_model="openai/fake-gpt",
            api_base="http://127.0.0.1:9/v1",
            input_cost_per_token=INPUT_PRICE,
            output_cost_per_token=OUTPUT_PRICE,
        ),
        ModelEntry(
            name="capped-gpt",
            litellm_model="openai/capped-gpt",
            api_base="http://127.0.0.1:9/v1",
            input_cost_per_token=INPUT_PRICE,
            output_cost_per_token=OUTPUT_PRICE,
            max_output_tokens=1234,
        ),
        ModelEntry(
            name="free-lunch",
            litellm_model="openai/llmbus-unpriced-model",
            api_base="http://127.0.0.1:9/v1",
        ),
    ]
    return Settings(models=entries)


@pytest.fixture
def catalog(settings: Settings) -> ModelCatalog:
    return ModelCatalog(settings)


def price(model: str, key: str) -> Decimal:
    return Decimal(str(SIM_MODELS[model][key]))


def test_sim_small_with_max_tokens_is_exact_list_price(catalog: ModelCatalog) -> None:
    prompt_tokens = catalog.count_tokens(SMALL, MESSAGES)
    expected = prompt_tokens * price(SMALL, "input_cost_per_token") + 100 * price(
        SMALL, "output_cost_per_token"
    )

    cost = catalog.worst_case_cost(SMALL, MESSAGES, 100)

    assert isinstance(cost, Decimal)
    assert prompt_tokens > 0
    assert cost == expected


def test_without_max_tokens_the_output_limit_is_assumed(catalog: ModelCatalog) -> None:
    limit = SIM_MODELS[SMALL]["max_output_tokens"]
    assert catalog.output_limit(SMALL) == limit
    assert (
        catalog.output_limit("llmbus-sim/large")
        == SIM_MODELS["llmbus-sim/large"]["max_output_tokens"]
    )

    assert catalog.worst_case_cost(SMALL, MESSAGES, None) == catalog.worst_case_cost(
        SMALL, MESSAGES, limit
    )
    assert catalog.worst_case_cost(SMALL, MESSAGES, None) > catalog.worst_case_cost(
        SMALL, MESSAGES, 100
    )


def test_catalog_prices_and_output_limit_are_used(catalog: ModelCatalog) -> None:
    prompt_tokens = catalog.count_tokens("fake-gpt", MESSAGES)
    input_price, output_price = Decimal(str(INPUT_PRICE)), Decimal(str(OUTPUT_PRICE))

    assert catalog.worst_case_cost("fake-gpt", MESSAGES, 50) == (
        prompt_tokens * input_price + 50 * output_price
    )
    # No output limit in the catalog or in litellm: the conservative default.
    assert catalog.output_limit("fake-gpt") is None
    assert catalog.worst_case_cost("fake-gpt", MESSAGES, None) == (
        prompt_tokens * input_price + DEFAULT_OUTPUT_TOKENS * output_price
    )
    # The catalog's max_output_tokens, registered with the prices, bounds the reply.
    assert catalog.output_limit("capped-gpt") == 1234
    assert catalog.worst_case_cost("capped-gpt", MESSAGES, None) == (
        prompt_tokens * input_price + 1234 * output_price
    )


@pytest.mark.parametrize("model", [SMALL, "llmbus-sim/large"])
@pytest.mark.parametrize("max_tokens", [5, 40, 2000])
async def test_worst_case_bounds_the_true_cost_of_a_sim_call(
    settings: Settings, catalog: ModelCatalog, model: str, max_tokens: int
) -> None:
    worst = catalog.worst_case_cost(model, MESSAGES, max_tokens)

    reply = await ModelGateway(settings, catalog).complete(
        model, MESSAGES, {"max_tokens": max_tokens}
    )

    assert reply.cost_usd > 0
    assert reply.usage.completion_tokens <= max_tokens
    assert worst >= Decimal(str(reply.cost_usd))


def test_unpriced_model_costs_zero_and_warns_once(
    catalog: ModelCatalog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmbus.shared.catalog"):
        first = catalog.worst_case_cost("free-lunch", MESSAGES, 100)
        second = catalog.worst_case_cost("free-lunch", MESSAGES, None)

    assert first == second == Decimal(0)
    warnings = [r for r in caplog.records if "budgets reserve 0" in r.getMessage()]
    assert len(warnings) == 1
    assert "free-lunch" in warnings[0].getMessage()


def test_negative_max_tokens_never_gives_a_negative_cost(catalog: ModelCatalog) -> None:
    prompt_only = catalog.worst_case_cost(SMALL, MESSAGES, 0)
    assert catalog.worst_case_cost(SMALL, MESSAGES, -50) == prompt_only >= 0


def test_the_reply_cap_is_what_a_reservation_pays_for(catalog: ModelCatalog) -> None:
    limit = catalog.output_limit("llmbus-sim/small")
    assert limit is not None
    assert catalog.reply_cap("llmbus-sim/small", None) == limit
    assert catalog.reply_cap("llmbus-sim/small", 50) == 50
    assert catalog.reply_cap("llmbus-sim/small", limit + 1000) == limit
    assert catalog.reply_cap("fake-gpt", None) == DEFAULT_OUTPUT_TOKENS


def test_the_catalog_starts_no_provider() -> None:
    """What the conversation service loads to fit and price a chat: no completion module, no
    simulated provider registered with litellm, nothing that calls a model."""
    script = (
        "import sys, litellm\n"
        "import llmbus.services.conversation.service\n"
        "from llmbus.shared.catalog import ModelCatalog\n"
        "from llmbus.shared.settings import Settings\n"
        "catalog = ModelCatalog(Settings())\n"
        "assert catalog.worst_case_cost('llmbus-sim/small', [{'role': 'user', 'content': 'hi'}], 9)\n"
        "assert catalog.context_window('llmbus-sim/large') == 200_000\n"
        "assert litellm.custom_provider_map == [], litellm.custom_provider_map\n"
        "loaded = [m for m in sys.modules if m.startswith('llmbus.services.completion')]\n"
        "assert loaded == [], loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
