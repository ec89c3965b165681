"""End to end on real services: requests by a managed prompt's key, answered by the version its
label points at, show up in usage by prompt version; moving the label moves the next requests."""

import pytest

from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts import CompletionRequested, PromptRef
from llmbus.shared.settings import Settings
from support import pipeline, projected_requests, running, wait_for

MODEL = "fake-gpt"


def by_key(request_id: str) -> CompletionRequested:
    ref = PromptRef(key="triage", variables={"ticket": "the export button does nothing"})
    return CompletionRequested(request_id=request_id, model=MODEL, prompt=ref, team_id="support")


async def test_requests_by_a_managed_prompt_key_are_costed_by_prompt_version(
    settings: Settings,
) -> None:
    async with (
        pipeline(settings) as (nc, _, client),
        running(serve_conversation, settings),
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        await client.prompts.create(
            "triage", "Ticket triage", "Classify this ticket: {{ ticket }}",
            labels=["production"], author="alice",
        )  # fmt: skip
        first = [await client.complete(by_key(f"triage-{i}")) for i in range(2)]
        await client.prompts.update(
            "triage", template="Classify this ticket by urgency: {{ ticket }}", author="bob"
        )
        still_v1 = await client.complete(by_key("triage-2"))  # production still points at v1
        await client.prompts.label("triage", "production", 2, author="bob")
        moved = await client.complete(by_key("triage-3"))

        async def projected() -> bool:
            return await projected_requests(client) == 4

        await wait_for(projected, 60, "the usage service to project the four calls")
        rows = (await client.usage.query(["prompt_version"])).rows
        costs = (await client.usage.query(["prompt"], filters={"prompt_version": "triage@2"})).rows

    assert [r.prompt_version for r in first] == [1, 1] and still_v1.prompt_version == 1
    assert moved.prompt_version == 2
    assert {r["prompt_version"]: r["requests"] for r in rows} == {"triage@1": 3, "triage@2": 1}
    assert costs[0]["cost_usd"] == pytest.approx(moved.cost_usd)
