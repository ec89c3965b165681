"""llmbus.completion.estimate on real NATS: routed and priced as the worker would, no model
called, the budgets that would apply with what is left, and a client's own requests only."""

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from llmbus.client import Client
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.errors import RequestError
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import llmbus_cli, new_client, pipeline, running, wait_for

MESSAGES = [{"role": "user", "content": "How much would this question cost to answer?"}]


def with_roles_and_budget(settings: Settings) -> Settings:
    raw: dict[str, Any] = settings.model_dump(mode="json")
    raw["roles"] = {"cheap": {"strategy": "cheapest-capable",
                              "candidates": ["llmbus-sim/large", "llmbus-sim/small"]}}  # fmt: skip
    raw["budgets"] = [
        {"name": "team-a-daily", "scope": {"team": "team-a"}, "window": "daily",
         "limit_usd": "5", "mode": "hard"},
        {"name": "other-team", "scope": {"team": "team-b"}, "window": "daily",
         "limit_usd": "5", "mode": "hard"},
    ]  # fmt: skip
    return Settings.model_validate(raw)


async def test_an_estimate_prices_the_worst_case_with_no_call_and_lists_the_budgets(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    routed = with_roles_and_budget(settings)
    catalog = ModelCatalog(routed)
    async with pipeline(routed) as (_nc, _events, client):
        estimate = await client.estimate(
            MESSAGES, model="fake-gpt", team_id="team-a", params={"max_tokens": 100}
        )
        assert (estimate.model, estimate.candidates, estimate.role) == (
            "fake-gpt",
            ["fake-gpt"],
            None,
        )
        assert estimate.prompt_tokens == catalog.count_tokens("fake-gpt", MESSAGES)
        assert estimate.max_tokens == 100 and estimate.priced
        worst = catalog.worst_case_cost("fake-gpt", MESSAGES, 100)
        assert Decimal(str(estimate.worst_case_usd)) == worst
        assert estimate.budgets_known
        assert [(b.budget, b.remaining_usd) for b in estimate.budgets] == [("team-a-daily", 5.0)]
        assert fake_provider.stats()["calls"] == {}, "an estimate calls no model"

        by_role = await client.estimate("hello", role="cheap")
        assert by_role.role == "cheap"
        assert by_role.candidates == ["llmbus-sim/small", "llmbus-sim/large"]

        with pytest.raises(RequestError) as unknown:
            await client.estimate("hello", role="nobody")
        assert unknown.value.error_type == "invalid_request" and "roles: cheap" in str(
            unknown.value
        )


async def test_an_estimate_renders_a_prompt_and_says_when_budgets_are_unknown(
    settings: Settings,
) -> None:
    async with (
        pipeline(settings, with_usage=False) as (nc, _events, client),
        running(serve_conversation, settings),
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        variables = {"text": "An event store keeps every change.", "max_words": 10}
        estimate = await client.estimate(
            model="llmbus-sim/small", prompt_ref={"key": "summarizer", "variables": variables}
        )
        assert estimate.prompt_version == 1 and estimate.prompt_tokens > 10
        assert not estimate.budgets_known and estimate.budgets == []
        with pytest.raises(RequestError) as missing:
            await client.estimate(model="llmbus-sim/small", prompt_ref={"key": "no-such-prompt"})
        assert missing.value.error_type == "not_found"


@pytest.mark.refusals
async def test_a_client_estimates_its_own_requests_only(settings: Settings) -> None:
    creds = await new_client(settings, "bob", "bob", team_id="team-b")
    async with (
        pipeline(with_roles_and_budget(settings)) as (_nc, _events, _client),
        Client(creds=creds, settings=settings) as bob,
    ):
        own = await bob.estimate("hi", model="llmbus-sim/small")
        assert [b.budget for b in own.budgets] == ["other-team"], "booked to bob's team"
        with pytest.raises(RequestError) as refused:
            await bob.estimate("hi", model="llmbus-sim/small", team_id="team-a")
        assert refused.value.error_type == "forbidden"


async def test_the_cli_prints_an_estimate(settings: Settings) -> None:
    async with pipeline(settings, with_usage=False):
        done = await asyncio.to_thread(
            llmbus_cli, "estimate", "hello there", "--model", "llmbus-sim/small", "--json"
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model"] == "llmbus-sim/small"
        text = await asyncio.to_thread(
            llmbus_cli, "estimate", "hello there", "-m", "llmbus-sim/small", "--max-tokens", "50"
        )
        assert text.returncode == 0, text.stderr
        assert "+ up to 50 reply tokens: at most $" in text.stdout
        assert "budgets unknown" in text.stdout
