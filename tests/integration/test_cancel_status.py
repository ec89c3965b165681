"""llmbus.completion.cancel and llmbus.completion.status on real NATS: a slow stream stopped
halfway is charged for what it generated, once; a queued request ends cancelled with no model
call; a request's status through queued, running, received and failed; a client learns only of
its own requests."""

from pathlib import Path

import pytest

from llmbus.client import Client, CompletionError
from llmbus.shared import subjects
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import EventLog, budget_status, new_client, pipeline, wait_for, with_budgets

TEAM_BUDGET = {"name": "streamers", "scope": {"team": "streamers"}, "window": "daily",
               "limit_usd": "10", "mode": "hard"}  # fmt: skip


def ended(events: EventLog, request_id: str) -> list[dict[str, object]]:
    return [e for e in events.terminal() if e["request_id"] == request_id]


def usage_of(events: EventLog, request_id: str) -> list[dict[str, object]]:
    return [u for u in events.on(subjects.USAGE_RECORDED) if u["request_id"] == request_id]


async def test_cancelling_a_slow_stream_halfway_charges_what_it_generated_once(
    config_file: Path, settings: Settings
) -> None:
    budgeted = with_budgets(config_file, TEAM_BUDGET)
    async with pipeline(budgeted) as (nc, events, client):
        stream = client.stream("count for me", model="drip-40-60", team_id="streamers")
        chunks: list[CompletionChunk] = []
        with pytest.raises(CompletionError) as raised:
            async for chunk in stream:
                chunks.append(chunk)
                if len(chunks) == 5:
                    answer = await stream.cancel()
                    assert answer.result == "cancelled", answer
        failed = raised.value.failed
        assert failed.error_type.value == "cancelled"
        assert failed.usage is not None and 5 <= failed.usage.completion_tokens < 60
        assert failed.cost_usd is not None and failed.cost_usd > 0
        assert chunks[-1].final and chunks[-1].error_type == "cancelled"
        assert answer.outcome is not None and answer.outcome["error_type"] == "cancelled"

        await wait_for(lambda: usage_of(events, stream.request_id), 30, "the usage recorded")
        [usage] = usage_of(events, stream.request_id)
        assert (usage["error_type"], usage["cost_usd"]) == ("cancelled", failed.cost_usd)

        cost = failed.cost_usd

        async def settled() -> bool:
            row = (await budget_status(nc))["streamers"]
            # the budget keeps dollars as decimals: the float cost, to its last digit
            return bool(row["reserved_usd"] == 0 and row["spent_usd"] == pytest.approx(cost))

        await wait_for(settled, 30, "the budget settled at the partial cost")
        assert len(ended(events, stream.request_id)) == 1
        again = await client.cancel(stream.request_id)
        assert again.result == "already_finished"
        assert len(ended(events, stream.request_id)) == 1, "no second terminal event"


async def test_a_queued_request_cancelled_ends_cancelled_with_no_call_and_status_follows_it(
    config_file: Path, settings: Settings, fake_provider: FakeProvider
) -> None:
    one_at_a_time = with_budgets(config_file, concurrency=1)
    calls_before = fake_provider.calls("slow-200")
    async with pipeline(one_at_a_time) as (_nc, events, client):
        assert (await client.status("never-sent")).status == "unknown"
        busy = client.request("keep the worker busy", model="slow-1500")
        queued = client.request("wait your turn", model="slow-200")
        await client.submit(busy)

        async def running() -> bool:
            return (await client.status(busy.request_id)).status == "running"

        await wait_for(running, 30, "the first request running")
        status = await client.status(busy.request_id)
        assert status.model == "slow-1500" and status.since is not None
        await client.submit(queued)
        assert (await client.status(queued.request_id)).status == "queued"

        answer = await client.cancel(queued.request_id)
        assert answer.result == "cancelling", answer
        assert (await client.status(queued.request_id)).cancel_requested

        await events.wait_terminal(2)
        [cancelled] = ended(events, queued.request_id)
        assert cancelled["error_type"] == "cancelled"
        assert fake_provider.calls("slow-200") == calls_before, "no model call"
        assert usage_of(events, queued.request_id) == []

        done = await client.status(busy.request_id)
        assert done.status == "received" and done.outcome is not None
        assert done.outcome["request_id"] == busy.request_id
        failed = await client.status(queued.request_id)
        assert failed.status == "failed" and failed.outcome == cancelled
        finished = await client.cancel(busy.request_id)
        assert finished.result == "already_finished" and finished.outcome == done.outcome


@pytest.mark.refusals
async def test_a_client_learns_of_and_cancels_its_own_requests_only(settings: Settings) -> None:
    creds = await new_client(settings, "carol", "carol")
    async with (
        pipeline(settings) as (_nc, _events, operator),
        Client(creds=creds, settings=settings) as carol,
    ):
        theirs = await operator.complete("the operator's", model="fake-gpt")
        assert (await carol.status(theirs.request_id)).status == "unknown"
        assert (await carol.cancel(theirs.request_id)).result == "unknown"
        mine = carol.stream("mine", model="drip-40-60")
        async for chunk in mine:
            if chunk.index == 2:
                status = await carol.status(mine.request_id)
                assert status.status == "running" and status.model == "drip-40-60"
                assert (await operator.status(mine.request_id)).status == "running"
                break
        answer = await carol.cancel(mine.request_id)
        assert answer.result == "cancelled"
        stored = await carol.status(mine.request_id)
        assert stored.status == "failed"
