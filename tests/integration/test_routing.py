"""Roles on real NATS and the fake provider: fallback with cooldown, the default role,
cheapest-capable (price, hard budgets, capabilities, context window) and no_capable_model."""

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmbus.client import CompletionError
from llmbus.shared import subjects
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import llmbus_cli, pipeline, wait_for


def fake_model(fake: FakeProvider, name: str, price: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "litellm_model": f"openai/{name}", "api_base": fake.base_url,
        "api_key_env": "LLMBUS_TEST_FAKE_KEY", "input_cost_per_token": price,
        "output_cost_per_token": price, **extra,
    }  # fmt: skip


def routed(settings: Settings, fake: FakeProvider, **config: Any) -> Settings:
    """The test settings with two more priced models and the given roles (and budgets)."""
    raw = settings.model_dump(mode="json")
    raw["models"] += [
        fake_model(fake, "cheap-gpt", 1e-7),
        fake_model(fake, "dear-gpt", 1e-5),
        fake_model(fake, "tiny-gpt", 1e-8, max_input_tokens=5),
        fake_model(fake, "ctx-3", 1e-8),
    ]
    return Settings.model_validate(raw | config)


def add_to_config_file(path: Path, **config: Any) -> dict[str, Any]:
    """The test's llmbus.yaml, which the CLI reads too, with these keys added."""
    updated: dict[str, Any] = yaml.safe_load(path.read_text()) | config
    path.write_text(yaml.safe_dump(updated))
    return updated


async def test_a_rate_limited_primary_falls_back_once_charged_and_cools_down(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    roles = {"coder": {"model": "fail-429", "fallbacks": ["fake-gpt"]}}
    routed_settings = routed(settings, fake_provider, roles=roles)
    async with pipeline(routed_settings) as (_, events, client):
        first = await client.complete("hello", role="coder")
        assert (first.model, first.role) == ("fake-gpt", "coder")
        assert [(a.model, a.error_type) for a in first.attempts] == [("fail-429", "rate_limited")]
        tried = fake_provider.calls("fail-429")
        assert tried == 1 + settings.completion.num_retries

        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 1, what="UsageRecorded")
        [usage] = events.on(subjects.USAGE_RECORDED)
        assert usage["status"] == "ok" and usage["model"] == "fake-gpt" and usage["cost_usd"] > 0
        assert usage["role"] == "coder" and usage["attempts"][0]["model"] == "fail-429"

        second = await client.complete("again", role="coder")  # fail-429 is cooling down
        assert second.model == "fake-gpt" and second.attempts == []
        assert fake_provider.calls("fail-429") == tried
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 2, what="UsageRecorded")
        assert all(u["status"] == "ok" for u in events.on(subjects.USAGE_RECORDED))


async def test_a_request_naming_neither_model_nor_role_takes_the_default_role(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    roles = {"helper": {"model": "fake-gpt", "params": {"max_tokens": 3}}}
    routed_settings = routed(settings, fake_provider, roles=roles, default_role="helper")
    async with pipeline(routed_settings, with_usage=False) as (_, _events, client):
        received = await client.complete("count to ten in words please")
        assert (received.model, received.role) == ("fake-gpt", "helper")
        assert received.usage.completion_tokens <= 3  # the role's params reached the call
        with pytest.raises(CompletionError) as unknown:
            await client.complete("hi", role="nobody")
        assert unknown.value.failed.error_type == "invalid_request"
        assert "helper" in unknown.value.failed.message


async def test_cheapest_capable_picks_the_cheaper_model(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    roles = {"clarifier": {"strategy": "cheapest-capable", "candidates": ["dear-gpt", "cheap-gpt"]}}
    routed_settings = routed(settings, fake_provider, roles=roles)
    async with pipeline(routed_settings, with_usage=False) as (_, _events, client):
        received = await client.complete("hi", role="clarifier", params={"max_tokens": 50})
        assert received.model == "cheap-gpt" and received.attempts == []


async def test_cheapest_capable_skips_a_model_its_hard_budget_cannot_cover(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    roles = {"clarifier": {"strategy": "cheapest-capable", "candidates": ["dear-gpt", "cheap-gpt"]}}
    budget = {"name": "cheap-cap", "scope": {"model": "cheap-gpt"}, "window": "daily",
              "limit_usd": "0.000000001", "mode": "hard"}  # fmt: skip
    routed_settings = routed(settings, fake_provider, roles=roles, budgets=[budget])
    assert routed_settings.admission_on
    async with pipeline(routed_settings) as (_, _events, client):
        received = await client.complete("hi", role="clarifier", params={"max_tokens": 50})
        assert received.model == "dear-gpt"
    assert Decimal(budget["limit_usd"]) > 0


async def test_no_capable_model_says_why_each_candidate_was_left_out(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    roles = {
        "tooling": {"strategy": "cheapest-capable", "candidates": ["cheap-gpt", "dear-gpt"],
                    "requires": {"tools": True}},
        "long": {"model": "tiny-gpt", "fallbacks": ["fake-gpt"]},
    }  # fmt: skip
    routed_settings = routed(settings, fake_provider, roles=roles)
    async with pipeline(routed_settings, with_usage=False) as (_, _events, client):
        with pytest.raises(CompletionError) as failure:
            await client.complete("hi", role="tooling")
        failed = failure.value.failed
        assert failed.error_type == "no_capable_model" and failed.role == "tooling"
        assert "cheap-gpt: lacks tools" in failed.message
        assert "dear-gpt: lacks tools" in failed.message

        # a prompt over tiny-gpt's context window goes to the next model, uncalled
        fake_provider.reset()
        received = await client.complete("a prompt of more words than five", role="long")
        assert received.model == "fake-gpt"
        assert fake_provider.calls("tiny-gpt") == 0


async def test_a_context_window_error_falls_through_at_once_to_a_bigger_model(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    roles = {"long": {"model": "ctx-3", "fallbacks": ["fake-gpt"]}}
    async with pipeline(routed(settings, fake_provider, roles=roles), with_usage=False) as (
        _, _events, client,
    ):  # fmt: skip
        received = await client.complete("five words are too many", role="long")
        assert received.model == "fake-gpt"
        assert [(a.model, a.error_type) for a in received.attempts] == [
            ("ctx-3", "context_window_exceeded")
        ]
        assert fake_provider.calls("ctx-3") == 1  # not retried: another model is the answer


async def test_a_fallback_reserves_at_its_own_price_and_releases_the_first_reservation(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    """Per-request reservations (no grants), a hard budget scoped on the role: the failed
    model's reservation is released, the fallback's settled at its cost, nothing left held."""
    roles = {"coder": {"model": "fail-500", "fallbacks": ["fake-gpt"]}}
    budget = {"name": "coders", "scope": {"role": "coder"}, "window": "daily",
              "limit_usd": "1", "mode": "hard"}  # fmt: skip
    routed_settings = routed(settings, fake_provider, roles=roles, budgets=[budget])
    routed_settings.completion.grant_requests = 0
    async with pipeline(routed_settings) as (_, _events, client):
        received = await client.complete("hello", role="coder", params={"max_tokens": 20})
        assert received.model == "fake-gpt" and received.attempts[0].model == "fail-500"

        async def settled() -> bool:
            [status] = await client.budgets.status()
            return status.reserved_usd == 0 and status.spent_usd == pytest.approx(received.cost_usd)

        await wait_for(settled, what="the budget to hold only the fallback's cost")


async def test_a_model_whose_key_the_start_check_rejects_is_skipped(
    settings: Settings, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBUS_TEST_REJECTED_KEY", "rejected-sk-0123456789abcdef")
    fake_provider.reset()
    roles = {"coder": {"model": "locked-gpt", "fallbacks": ["fake-gpt"]}}
    routed_settings = routed(settings, fake_provider, roles=roles)
    raw = routed_settings.model_dump(mode="json")
    locked = fake_model(fake_provider, "locked-gpt", 1e-7, api_key_env="LLMBUS_TEST_REJECTED_KEY")
    raw["models"].append(locked)
    async with pipeline(Settings.model_validate(raw), with_usage=False) as (_, _events, client):
        received = await client.complete("hello", role="coder")
        assert received.model == "fake-gpt" and received.attempts == []
        assert fake_provider.calls("locked-gpt") == 0


async def test_the_cli_asks_for_a_role_or_the_default_role_and_shows_the_route(
    settings: Settings, fake_provider: FakeProvider, config_file: Path
) -> None:
    roles = {
        "coder": {"model": "fail-500", "fallbacks": ["fake-gpt"]},
        "helper": {"model": "fake-gpt"},
    }
    config = add_to_config_file(config_file, roles=roles, default_role="helper")
    async with pipeline(routed(settings, fake_provider, **config), with_usage=False):
        by_role = await asyncio.to_thread(llmbus_cli, "complete", "hello", "--role", "coder")
        assert by_role.returncode == 0, by_role.stderr
        assert "fake-gpt (role coder) after fail-500: provider_error" in by_role.stdout
        by_default = await asyncio.to_thread(llmbus_cli, "complete", "hello")
        assert by_default.returncode == 0, by_default.stderr
        assert "fake-gpt (role helper)" in by_default.stdout
        both = await asyncio.to_thread(llmbus_cli, "complete", "hi", "-m", "x", "-r", "coder")
        assert both.returncode == 1 and "not both" in both.stderr
