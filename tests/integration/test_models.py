"""The litellm adapter, the built-in sim models and the fake provider, through litellm's real path."""

import json
import uuid

import aiohttp
import litellm
import pytest

from llmbus.services.completion.errors import ModelCallFailed
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.sim import SIM_MODELS, register_sim_provider
from llmbus.shared.catalog import ModelCatalog, Route, UnknownModelError
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.secrets import scrub
from llmbus.shared.sections import CompletionSettings, ModelEntry
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider

NUM_RETRIES = 2
KEY_ENV = "LLMBUS_TEST_MODELS_KEY"
# Deliberately not shaped like sk-...: only the env-value scrub can catch it.
DUMMY_KEY = "dummy-provider-key-4f9a7c21e0"
INPUT_PRICE = 1e-6
OUTPUT_PRICE = 2e-6
FAKE_MODELS = ["fake-gpt", "fail-429", "fail-500", "fail-401", "flaky-429-1", "missing-model"]


@pytest.fixture
def fake(fake_provider: FakeProvider) -> FakeProvider:
    return fake_provider  # the session's provider process; tests compare call counts


@pytest.fixture
def gateway(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> ModelGateway:
    monkeypatch.setenv(KEY_ENV, DUMMY_KEY)
    entries = [
        ModelEntry(
            name=name,
            litellm_model=f"openai/{name}",
            api_base=fake.base_url,
            api_key_env=KEY_ENV,
            input_cost_per_token=INPUT_PRICE,
            output_cost_per_token=OUTPUT_PRICE,
        )
        for name in FAKE_MODELS
    ]
    settings = Settings(completion=CompletionSettings(num_retries=NUM_RETRIES), models=entries)
    return ModelGateway(settings, ModelCatalog(settings))


def ask(text: str) -> list[dict[str, str]]:
    # A unique question per test keeps the fake's per-message flaky counters independent.
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex[:8]})"}]


async def test_success_through_fake_is_priced_from_the_catalog(
    gateway: ModelGateway, fake: FakeProvider
) -> None:
    messages = ask("what is a bus?")
    before = fake.calls("fake-gpt")

    reply = await gateway.complete("fake-gpt", messages, {"temperature": 0.2})

    assert reply.content == f"fake reply to: {messages[0]['content'][:40]}"
    assert reply.finish_reason == "stop"
    assert (reply.provider, reply.model) == ("openai", "fake-gpt")
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    expected = (
        reply.usage.prompt_tokens * INPUT_PRICE + reply.usage.completion_tokens * OUTPUT_PRICE
    )
    assert reply.cost_usd == pytest.approx(expected)
    assert reply.latency_ms > 0
    assert fake.calls("fake-gpt") == before + 1


@pytest.mark.parametrize(
    ("model", "error_type"),
    [("fail-429", ErrorType.rate_limited), ("fail-500", ErrorType.provider_error)],
)
async def test_retryable_failures_are_retried_then_reported(
    gateway: ModelGateway, fake: FakeProvider, model: str, error_type: ErrorType
) -> None:
    before = fake.calls(model)

    with pytest.raises(ModelCallFailed) as failed:
        await gateway.complete(model, ask("hello"), {})

    assert failed.value.error_type is error_type
    assert failed.value.retryable is True
    assert failed.value.provider == "openai"
    assert fake.calls(model) == before + 1 + NUM_RETRIES
    assert f"{1 + NUM_RETRIES} attempts" in failed.value.message


async def test_a_passing_rate_limit_is_retried_to_success(
    gateway: ModelGateway, fake: FakeProvider
) -> None:
    before = fake.calls("flaky-429-1")

    reply = await gateway.complete("flaky-429-1", ask("try again"), {})

    assert reply.content.startswith("fake reply to: try again")
    assert fake.calls("flaky-429-1") == before + 2


async def test_authentication_failure_is_final_and_never_shows_the_key(
    gateway: ModelGateway, fake: FakeProvider
) -> None:
    before = fake.calls("fail-401")

    with pytest.raises(ModelCallFailed) as failed:
        await gateway.complete("fail-401", ask("let me in"), {})

    assert failed.value.error_type is ErrorType.authentication
    assert failed.value.retryable is False
    assert fake.calls("fail-401") == before + 1
    # The fake echoes the presented key in full, so this proves the scrub.
    assert "Incorrect API key" in failed.value.message
    for text in (failed.value.message, str(failed.value), repr(failed.value)):
        assert DUMMY_KEY not in text
    assert KEY_ENV in failed.value.message
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


async def test_provider_404_means_unknown_model(gateway: ModelGateway) -> None:
    with pytest.raises(ModelCallFailed) as failed:
        await gateway.complete("missing-model", ask("anyone there?"), {})

    assert failed.value.error_type is ErrorType.unknown_model
    assert failed.value.retryable is False


async def test_unknown_model_is_refused_without_any_call(
    gateway: ModelGateway, fake: FakeProvider
) -> None:
    before = fake.stats()["total"]

    with pytest.raises(UnknownModelError) as resolved:
        gateway.catalog.resolve("no-such-provider-model-xyz")
    with pytest.raises(ModelCallFailed) as completed:
        await gateway.complete("no-such-provider-model-xyz", ask("hi"), {})

    assert completed.value.retryable is False
    for failed in (resolved.value, completed.value):
        assert failed.error_type is ErrorType.unknown_model
        assert "no-such-provider-model-xyz" in failed.message
    assert fake.stats()["total"] == before


async def test_a_request_cannot_redirect_the_call(
    gateway: ModelGateway, fake: FakeProvider
) -> None:
    before = fake.stats()["total"]

    with pytest.raises(ModelCallFailed) as failed:
        await gateway.complete("fake-gpt", ask("hi"), {"api_base": "http://attacker.invalid/v1"})

    assert failed.value.error_type is ErrorType.bad_request
    assert "api_base" in failed.value.message
    assert fake.stats()["total"] == before


def test_resolve_maps_catalog_names_and_litellm_names(gateway: ModelGateway) -> None:
    def resolved(model: str) -> tuple[str, str]:
        route: Route = gateway.catalog.resolve(model)
        return route.target, route.provider

    assert resolved("fake-gpt") == ("openai/fake-gpt", "openai")
    assert resolved("llmbus-sim/small") == ("llmbus-sim/small", "llmbus-sim")
    assert resolved("gpt-4o-mini") == ("gpt-4o-mini", "openai")


def test_prompt_estimate_uses_litellm_tokenizer(gateway: ModelGateway) -> None:
    messages = [{"role": "user", "content": "Count these tokens, please."}]

    estimate = gateway.catalog.count_tokens("llmbus-sim/small", messages)

    assert estimate == litellm.token_counter(model="llmbus-sim/small", messages=messages)
    assert estimate > 0


@pytest.mark.parametrize("model", ["llmbus-sim/small", "llmbus-sim/large"])
async def test_sim_models_are_deterministic_counted_and_priced(
    gateway: ModelGateway, model: str
) -> None:
    messages = [{"role": "user", "content": "Explain event sourcing in one breath."}]

    reply = await gateway.complete(model, messages, {})
    again = await gateway.complete(model, messages, {})

    assert reply.content == again.content
    assert reply.content.startswith(f"[{model}] ")
    assert reply.provider == "llmbus-sim"
    assert reply.usage.prompt_tokens == litellm.token_counter(model=model, messages=messages)
    assert reply.usage.completion_tokens == litellm.token_counter(
        model=model, text=reply.content, count_response_tokens=True
    )
    prices = SIM_MODELS[model]
    expected = (
        reply.usage.prompt_tokens * prices["input_cost_per_token"]
        + reply.usage.completion_tokens * prices["output_cost_per_token"]
    )
    assert reply.cost_usd > 0
    assert reply.cost_usd == pytest.approx(expected)


async def test_sim_large_says_more_than_small(gateway: ModelGateway) -> None:
    messages = [{"role": "user", "content": "Tell me about NATS."}]

    small = await gateway.complete("llmbus-sim/small", messages, {})
    large = await gateway.complete("llmbus-sim/large", messages, {})

    assert large.usage.completion_tokens > small.usage.completion_tokens


async def test_sim_respects_max_tokens(gateway: ModelGateway) -> None:
    messages = [{"role": "user", "content": "Write at length."}]

    reply = await gateway.complete("llmbus-sim/large", messages, {"max_tokens": 7})

    assert reply.usage.completion_tokens <= 7
    assert reply.finish_reason == "length"


async def test_sim_streams_the_same_text_with_usage(gateway: ModelGateway) -> None:
    messages = [{"role": "user", "content": "Stream this."}]
    whole = await gateway.complete("llmbus-sim/small", messages, {})

    stream = await litellm.acompletion(
        model="llmbus-sim/small",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    async for part in stream:
        if part.choices and part.choices[0].delta.content:
            pieces.append(part.choices[0].delta.content)
        usage = getattr(part, "usage", None) or usage

    assert "".join(pieces) == whole.content
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


async def test_fake_provider_streams_sse_chunks_ending_in_done(fake: FakeProvider) -> None:
    body = {
        "model": "fake-gpt",
        "messages": [{"role": "user", "content": "stream please"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line for line in (await response.text()).splitlines() if line]

    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "fake reply to: stream please"
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_scrub_removes_key_values_and_key_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "plain-secret-value-123")
    text = "bad key plain-secret-value-123, sk-proj-abcdef123456 and Bearer abc.def.ghi"

    cleaned = scrub(text)

    assert "plain-secret-value-123" not in cleaned
    assert "abcdef123456" not in cleaned
    assert "abc.def.ghi" not in cleaned


async def test_a_slow_provider_times_out_as_retryable(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, DUMMY_KEY)
    entry = ModelEntry(
        name="slow-5000",
        litellm_model="openai/slow-5000",
        api_base=fake.base_url,
        api_key_env=KEY_ENV,
    )
    completion = CompletionSettings(num_retries=0, timeout_s=0.3)
    settings = Settings(completion=completion, models=[entry])
    gateway = ModelGateway(settings, ModelCatalog(settings))

    with pytest.raises(ModelCallFailed) as failed:
        await gateway.complete("slow-5000", ask("take your time"), {})

    assert failed.value.error_type is ErrorType.timeout
    assert failed.value.retryable is True
    assert failed.value.latency_ms < 5000


def test_sim_provider_registers_once_and_knows_only_its_models(gateway: ModelGateway) -> None:
    register_sim_provider()
    register_sim_provider()

    assert [i["provider"] for i in litellm.custom_provider_map].count("llmbus-sim") == 1
    with pytest.raises(UnknownModelError) as failed:
        gateway.catalog.resolve("llmbus-sim/medium")
    assert failed.value.error_type is ErrorType.unknown_model
