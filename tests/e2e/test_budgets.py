"""Hard budgets hold under concurrency across worker processes; budget events fire once."""

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from llmbus.client import Client, CompletionError
from llmbus.services.completion.service import serve as serve_completion
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import subjects
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.contracts.budget import settled_cost
from llmbus.shared.settings import Settings
from support import (
    MAX_TOKENS,
    MESSAGES,
    MODEL,
    budget_status,
    completion_service_ready,
    connected,
    pipeline,
    running,
    spawn_service,
    stop_process,
    wait_for,
    watching_events,
    with_budgets,
    worst_case,
)


def request(request_id: str, team: str = "team-a") -> bytes:
    return json.dumps({
        "request_id": request_id, "model": MODEL, "messages": MESSAGES, "team_id": team,
        "params": {"max_tokens": MAX_TOKENS},
    }).encode()  # fmt: skip


async def test_a_hard_budget_holds_with_three_workers_and_150_requests_at_once(
    settings: Settings, config_file: Path
) -> None:
    limit = worst_case(settings) * 20
    settings = with_budgets(
        config_file,
        {"name": "team-a-daily", "scope": {"team": "team-a"}, "window": "daily",
         "limit_usd": str(limit), "mode": "hard", "thresholds": [0.5, 1.0]},
    )  # fmt: skip
    workers = [spawn_service("completion", config_file) for _ in range(3)]
    try:
        async with (
            connected(settings) as nc,
            watching_events(nc) as events,
            running(serve_usage, settings),
        ):
            await wait_for(lambda: completion_service_ready(nc), 60, "the workers")
            js = nc.jetstream()
            await asyncio.gather(
                *(js.publish(subjects.COMPLETION_REQUESTED, request(f"b-{i}")) for i in range(150))
            )
            terminal = await events.wait_terminal(150, timeout=120)
            received = events.on(subjects.COMPLETION_RECEIVED)

            async def all_settled() -> bool:
                status = (await budget_status(nc))["team-a-daily"]
                return status["reserved_usd"] == 0

            await wait_for(all_settled, 30, "every reservation settled or released")
            spent = Decimal(str((await budget_status(nc))["team-a-daily"]["spent_usd"]))
    finally:
        for worker in workers:
            await asyncio.to_thread(stop_process, worker)

    assert sorted(e["request_id"] for e in terminal) == sorted(f"b-{i}" for i in range(150))
    refused = events.on(subjects.COMPLETION_FAILED)
    assert len(received) + len(refused) == 150 and 1 <= len(received) < 150
    assert {e["error_type"] for e in refused} == {"budget_exceeded"}
    assert all("team-a-daily" in e["message"] for e in refused)
    costs = sum(settled_cost(e["cost_usd"]) for e in events.on(subjects.USAGE_RECORDED))
    assert costs <= limit and spent <= limit
    assert costs == spent
    exceeded = events.on(subjects.BUDGET_EXCEEDED)
    assert exceeded and {e["budget"] for e in exceeded} == {"team-a-daily"}
    assert {e["request_id"] for e in exceeded} <= {e["request_id"] for e in refused}


async def test_requests_that_fit_once_open_reservations_settle_wait_instead_of_being_refused(
    settings: Settings, config_file: Path
) -> None:
    loose = 2000  # max_tokens far above the real reply: each reservation is mostly released
    worst = ModelCatalog(settings).worst_case_cost(MODEL, MESSAGES, loose)
    settings = with_budgets(
        config_file,
        {"name": "team-c-daily", "scope": {"team": "team-c"}, "window": "daily",
         "limit_usd": str(worst * 3), "mode": "hard"},
    )  # fmt: skip
    async with pipeline(settings) as (nc, events, client):
        probe = await client.complete(
            MESSAGES, model=MODEL, team_id="team-c", params={"max_tokens": loose}
        )
        # room for 3 reservations at a time, but for 2 worst cases' worth of true calls
        assert Decimal(str(probe.cost_usd)) * 20 < worst
        replies = await asyncio.gather(
            *(client.complete(MESSAGES, model=MODEL, team_id="team-c",
                              params={"max_tokens": loose}) for _ in range(12))
        )  # fmt: skip

        async def settled() -> bool:
            return (await budget_status(nc))["team-c-daily"]["reserved_usd"] == 0

        await wait_for(settled, 30, "every reservation settled")
        status = (await budget_status(nc))["team-c-daily"]
    assert len(replies) == 12 and all(r.cost_usd > 0 for r in replies)
    assert not events.on(subjects.BUDGET_EXCEEDED)
    assert status["spent_usd"] <= float(worst * 3)


async def test_a_soft_budget_passes_everything_and_fires_each_threshold_once(
    settings: Settings, config_file: Path
) -> None:
    limit = worst_case(settings) * 3
    settings = with_budgets(
        config_file,
        {"name": "team-a-soft", "scope": {"team": "team-a"}, "window": "daily",
         "limit_usd": str(limit), "mode": "soft", "thresholds": [0.5, 0.8, 1.0]},
    )  # fmt: skip
    async with pipeline(settings) as (nc, events, client):
        replies = await asyncio.gather(
            *(client.complete(MESSAGES, model=MODEL, team_id="team-a",
                              params={"max_tokens": MAX_TOKENS}) for _ in range(20))
        )  # fmt: skip
        assert len(replies) == 20
        await wait_for(lambda: settled(nc, "team-a-soft", events, 20), 30, "every call settled")
        await wait_for(
            lambda: len(events.on(subjects.BUDGET_THRESHOLD_REACHED)) >= 3, 30, "thresholds"
        )
        status = (await budget_status(nc))["team-a-soft"]
    crossings = events.on(subjects.BUDGET_THRESHOLD_REACHED)
    assert sorted(e["threshold"] for e in crossings) == [0.5, 0.8, 1.0]
    assert all(e["budget"] == "team-a-soft" and e["mode"] == "soft" for e in crossings)
    assert status["spent_usd"] > float(limit)  # soft: over the limit, never blocked


async def test_a_budget_changed_at_run_time_applies_to_the_next_request(
    settings: Settings, config_file: Path
) -> None:
    settings = with_budgets(
        config_file,
        {"name": "team-b-daily", "scope": {"team": "team-b"}, "window": "daily",
         "limit_usd": "10", "mode": "hard"},
    )  # fmt: skip
    async with pipeline(settings) as (nc, _, client):
        first = await client.complete(
            MESSAGES, model=MODEL, team_id="team-b", params={"max_tokens": MAX_TOKENS}
        )
        assert first.cost_usd > 0
        tiny = {"name": "team-b-daily", "scope": {"team": "team-b"}, "window": "daily",
                "limit_usd": "0.0000001", "mode": "hard"}  # fmt: skip
        await nc.request(subjects.BUDGET_SET, json.dumps(tiny).encode(), timeout=5)
        with pytest.raises(CompletionError) as refused:
            await client.complete(
                MESSAGES, model=MODEL, team_id="team-b", params={"max_tokens": MAX_TOKENS}
            )
    assert refused.value.failed.error_type == "budget_exceeded"
    assert "team-b-daily" in refused.value.failed.message


async def settled(nc: Any, name: str, events: Any, calls: int, last: int | None = None) -> bool:
    """`calls` calls published their UsageRecorded, the budget holds nothing for them, and its
    spend is their cost (of the `last` few, in a window that began since). A soft budget holds
    nothing for a grant, so its reserved figure alone cannot tell."""
    usages = events.on(subjects.USAGE_RECORDED)
    if len(usages) < calls:
        return False
    status = (await budget_status(nc))[name]
    costs = sum(settled_cost(e["cost_usd"]) for e in usages[-(last or calls) :])
    return status["reserved_usd"] == 0 and Decimal(str(status["spent_usd"])) == costs


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_new_window_resets_spend_and_lets_thresholds_fire_again(
    settings: Settings, config_file: Path
) -> None:
    settings = with_budgets(
        config_file,
        {"name": "team-a-soft", "scope": {"team": "team-a"}, "window": "daily",
         "limit_usd": str(worst_case(settings) * 2), "mode": "soft", "thresholds": [0.5]},
    )  # fmt: skip
    clock = Clock(datetime(2026, 11, 23, 12, tzinfo=UTC))
    async with (
        connected(settings) as nc,
        watching_events(nc) as events,
        running(serve_completion, settings),
        running(partial(serve_usage, clock=clock), settings),
        Client(settings=settings) as client,
    ):
        await wait_for(lambda: completion_service_ready(nc), 60, "the completion worker")

        async def spend_twice(calls_so_far: int) -> None:
            for _ in range(2):
                await client.complete(MESSAGES, model=MODEL, team_id="team-a",
                                      params={"max_tokens": MAX_TOKENS})  # fmt: skip
            # this window's spend is the last two calls' cost once both have settled
            await wait_for(lambda: settled(nc, "team-a-soft", events, calls_so_far, last=2),
                           30, "the calls settled")  # fmt: skip

        await spend_twice(2)
        await wait_for(lambda: len(events.on(subjects.BUDGET_THRESHOLD_REACHED)) == 1, 30)
        before = (await budget_status(nc))["team-a-soft"]
        assert before["spent_usd"] > 0 and before["window_start"].startswith("2026-11-23")

        clock.now = datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)
        after = (await budget_status(nc))["team-a-soft"]
        assert after["spent_usd"] == 0 and after["window_start"].startswith("2026-11-24")

        await spend_twice(4)
        await wait_for(lambda: len(events.on(subjects.BUDGET_THRESHOLD_REACHED)) == 2, 30)
    windows = [e["window_start"][:10] for e in events.on(subjects.BUDGET_THRESHOLD_REACHED)]
    assert windows == ["2026-11-23", "2026-11-24"]


@pytest.mark.parametrize("grant_requests", [32, 0], ids=["under-a-grant", "per-request"])
async def test_a_killed_workers_reservations_are_released_by_lease_and_settled_once(
    settings: Settings, config_file: Path, grant_requests: int
) -> None:
    settings = with_budgets(
        config_file,
        {"name": "global", "window": "daily", "limit_usd": "1", "mode": "hard"},
        timeout_s=3, num_retries=0, lease_margin_s=1, grant_requests=grant_requests,
    )  # fmt: skip
    worker = spawn_service("completion", config_file)
    replacement = None
    async with (
        connected(settings) as nc,
        watching_events(nc) as events,
        running(serve_usage, settings),
    ):
        try:
            await wait_for(lambda: completion_service_ready(nc), 60, "the first worker")
            for i in range(10):
                body = {"request_id": f"lease-{i}", "model": "slow-1500", "messages": MESSAGES}
                await nc.jetstream().publish(
                    subjects.COMPLETION_REQUESTED, json.dumps(body).encode()
                )

            async def reserved() -> float:
                return float((await budget_status(nc))["global"]["reserved_usd"])

            await wait_for(lambda: _above(reserved(), 0), 30, "reservations held")
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            await wait_for(lambda: _equal(reserved(), 0), 30, "the leases to expire")
            assert (await budget_status(nc))["global"]["spent_usd"] == 0

            replacement = spawn_service("completion", config_file)
            await events.wait_terminal(10, timeout=60)
            await wait_for(lambda: _equal(reserved(), 0), 30, "the calls settled")
            spent = Decimal(str((await budget_status(nc))["global"]["spent_usd"]))
        finally:
            stop_process(worker)
            if replacement is not None:
                await asyncio.to_thread(stop_process, replacement)
    assert {e["request_id"] for e in events.terminal()} == {f"lease-{i}" for i in range(10)}
    costs = sum(settled_cost(e["cost_usd"]) for e in events.on(subjects.USAGE_RECORDED))
    assert len(events.on(subjects.USAGE_RECORDED)) == 10
    assert spent == costs > 0  # each call settled once, none twice
    grants = [e["grant_id"] for e in events.on(subjects.USAGE_RECORDED)]
    assert all(grants) if grant_requests else not any(grants)  # the path it says it tests


async def _above(value: Any, floor: float) -> bool:
    return await value > floor


async def _equal(value: Any, target: float) -> bool:
    return await value == target


async def test_what_remains_in_each_budget_a_request_would_count_against(
    settings: Settings, config_file: Path
) -> None:
    limit = worst_case(settings) * 100
    settings = with_budgets(
        config_file,
        {"name": "team-r-daily", "scope": {"team": "team-r"}, "window": "daily",
         "limit_usd": str(limit), "mode": "hard"},
        {"name": "small-monthly", "scope": {"model": MODEL}, "window": "monthly",
         "limit_usd": "50", "mode": "soft"},
        {"name": "team-other-daily", "scope": {"team": "other"}, "window": "daily",
         "limit_usd": "1", "mode": "hard"},
    )  # fmt: skip
    async with pipeline(settings) as (nc, _, client):
        reply = await client.complete(
            MESSAGES, model=MODEL, team_id="team-r", params={"max_tokens": MAX_TOKENS}
        )

        async def settled() -> bool:
            status = (await budget_status(nc))["team-r-daily"]
            return status["spent_usd"] > 0 and status["reserved_usd"] == 0

        await wait_for(settled, 30, "the call settled and nothing held for team-r")
        rows = await client.budgets.remaining(team_id="team-r", model=MODEL)
        _, cli, _ = await llmbus_budgets("remaining", "--for", "team=team-r", "--for",
                                         f"model={MODEL}", "--format", "json")  # fmt: skip
        code, _, error = await llmbus_budgets("remaining", "--for", "colour=red")
    cost = float(settled_cost(reply.cost_usd))
    assert [(r.budget, r.mode) for r in rows] == [
        ("small-monthly", "soft"),
        ("team-r-daily", "hard"),
    ]
    assert rows[0].remaining_usd == pytest.approx(50 - cost)
    assert rows[1].remaining_usd == pytest.approx(float(limit) - cost)
    assert json.loads(cli) == [r.model_dump(mode="json") for r in rows]
    assert code != 0 and "--for takes user, team, project, model and role" in error


async def llmbus_budgets(*args: str) -> tuple[int, str, str]:
    """`llmbus budgets ...` as a user runs it: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmbus", "budgets", *args, env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()
