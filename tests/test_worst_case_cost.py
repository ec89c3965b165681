"""The worst-case cost a hard budget reserves before a call: list price, offline, no HTTP."""

import logging
from decimal import Decimal

import pytest

from llmbus.services.completion.models import DEFAULT_OUTPUT_TOKENS, ModelGateway
from llmbus.services.completion.sim import SIM_MODELS
from llmbus.shared.settings import ModelEntry, Settings

SMALL = "llmbus-sim/small"
INPUT_PRICE = 1e-6
OUTPUT_PRICE = 2e-6
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What does a message bus do for LLM calls?"},
]


@pytest.fixture
def gateway() -> ModelGateway:
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
    return ModelGateway(Settings(models=entries))


def price(model: str, key: str) -> Decimal:
    return Decimal(str(SIM_MODELS[model][key]))


def test_sim_small_with_max_tokens_is_exact_list_price(gateway: ModelGateway) -> None:
    prompt_tokens = gateway.estimate_prompt_tokens(SMALL, MESSAGES)
    expected = prompt_tokens * price(SMALL, "input_cost_per_token") + 100 * price(
        SMALL, "output_cost_per_token"
    )

    cost = gateway.worst_case_cost(SMALL, MESSAGES, 100)

    assert isinstance(cost, Decimal)
    assert prompt_tokens > 0
    assert cost == expected


def test_without_max_tokens_the_output_limit_is_assumed(gateway: ModelGateway) -> None:
    limit = SIM_MODELS[SMALL]["max_output_tokens"]
    assert gateway.output_limit(SMALL) == limit
    assert (
        gateway.output_limit("llmbus-sim/large")
        == SIM_MODELS["llmbus-sim/large"]["max_output_tokens"]
    )

    assert gateway.worst_case_cost(SMALL, MESSAGES, None) == gateway.worst_case_cost(
        SMALL, MESSAGES, limit
    )
    assert gateway.worst_case_cost(SMALL, MESSAGES, None) > gateway.worst_case_cost(
        SMALL, MESSAGES, 100
    )


def test_catalog_prices_and_output_limit_are_used(gateway: ModelGateway) -> None:
    prompt_tokens = gateway.estimate_prompt_tokens("fake-gpt", MESSAGES)
    input_price, output_price = Decimal(str(INPUT_PRICE)), Decimal(str(OUTPUT_PRICE))

    assert gateway.worst_case_cost("fake-gpt", MESSAGES, 50) == (
        prompt_tokens * input_price + 50 * output_price
    )
    # No output limit in the catalog or in litellm: the conservative default.
    assert gateway.output_limit("fake-gpt") is None
    assert gateway.worst_case_cost("fake-gpt", MESSAGES, None) == (
        prompt_tokens * input_price + DEFAULT_OUTPUT_TOKENS * output_price
    )
    # The catalog's max_output_tokens, registered with the prices, bounds the reply.
    assert gateway.output_limit("capped-gpt") == 1234
    assert gateway.worst_case_cost("capped-gpt", MESSAGES, None) == (
        prompt_tokens * input_price + 1234 * output_price
    )


@pytest.mark.parametrize("model", [SMALL, "llmbus-sim/large"])
@pytest.mark.parametrize("max_tokens", [5, 40, 2000])
async def test_worst_case_bounds_the_true_cost_of_a_sim_call(
    gateway: ModelGateway, model: str, max_tokens: int
) -> None:
    worst = gateway.worst_case_cost(model, MESSAGES, max_tokens)

    reply = await gateway.complete(model, MESSAGES, {"max_tokens": max_tokens})

    assert reply.cost_usd > 0
    assert reply.usage.completion_tokens <= max_tokens
    assert worst >= Decimal(str(reply.cost_usd))


def test_unpriced_model_costs_zero_and_warns_once(
    gateway: ModelGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmbus.services.completion.models"):
        first = gateway.worst_case_cost("free-lunch", MESSAGES, 100)
        second = gateway.worst_case_cost("free-lunch", MESSAGES, None)

    assert first == second == Decimal(0)
    warnings = [r for r in caplog.records if "budgets reserve 0" in r.getMessage()]
    assert len(warnings) == 1
    assert "free-lunch" in warnings[0].getMessage()


def test_negative_max_tokens_never_gives_a_negative_cost(gateway: ModelGateway) -> None:
    prompt_only = gateway.worst_case_cost(SMALL, MESSAGES, 0)
    assert gateway.worst_case_cost(SMALL, MESSAGES, -50) == prompt_only >= 0


def test_the_reply_cap_is_what_a_reservation_pays_for(gateway: ModelGateway) -> None:
    limit = gateway.output_limit("llmbus-sim/small")
    assert limit is not None
    assert gateway.reply_cap("llmbus-sim/small", None) == limit
    assert gateway.reply_cap("llmbus-sim/small", 50) == 50
    assert gateway.reply_cap("llmbus-sim/small", limit + 1000) == limit
    assert gateway.reply_cap("fake-gpt", None) == DEFAULT_OUTPUT_TOKENS
