"""Budgets fail closed when settlements stop arriving.

A worker returns a grant once the calls it admitted have ended, and says what they cost; their
UsageRecorded settle them at the usage service. If those stop (an outbox wedged, the consumer
down), the grant's lease runs out with its calls unsettled. Releasing what it held would let the
budget admit as if nothing had been spent: it is counted as spent instead, and no budget gives
grants while settlement lags.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from llmbus.client import CompletionError
from llmbus.services.usage.application import BudgetBook, UsageApplication
from llmbus.services.usage.application.budget_book import SETTLEMENT_LAG
from llmbus.services.usage.domain import Budget
from llmbus.shared import subjects
from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    BudgetGrantRequest,
    BudgetGrantReturn,
    settled_cost,
)
from llmbus.shared.eventstore import open_store
from llmbus.shared.settings import Settings
from support import MESSAGES, MODEL, budget_status, pipeline, wait_for, with_budgets, worst_case

NOW = datetime(2026, 3, 12, 9, 30, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def usd(amount: str) -> Decimal:
    return Decimal(amount)


def team_budget() -> Budget:
    definition = BudgetDefinition(name="team-a", scope={"team": "team-a"}, window="daily",
                                  limit_usd=usd("10"), mode="hard")  # fmt: skip
    return Budget.define(definition, NOW)


def test_a_returned_grant_whose_calls_never_settle_counts_them_as_spent_when_it_lapses() -> None:
    team = team_budget()
    team.grant("g-1", usd("4"), NOW, LEASE, "worker-1")
    team.settle_granted("g-1", "r-1", usd("1"), NOW)
    # its calls cost 1 + 2: the worker returns 1 unused; the second call's settlement is late
    team.return_grant("g-1", usd("1"), NOW)
    assert team.reserved_usd == usd("2")

    team.expire_leases(NOW + LEASE)
    assert team.reserved_usd == 0 and team.spent_usd == usd("3")
    assert team.room_usd(NOW + LEASE) == usd("7")  # not 9: the unsettled call was paid

    team.settle_granted("g-1", "r-2", usd("2"), NOW + LEASE)  # it arrives after all: once
    assert team.spent_usd == usd("3")
    team.settle_granted("g-1", "r-3", usd("0.5"), NOW + LEASE)  # beyond what was assumed
    assert team.spent_usd == usd("3.5")


def test_a_grant_whose_worker_died_is_still_released_by_its_lease() -> None:
    team = team_budget()
    team.grant("g-1", usd("4"), NOW, LEASE, "worker-1")
    team.settle_granted("g-1", "r-1", usd("1"), NOW)
    team.expire_leases(NOW + LEASE)  # never returned: its holder is gone
    assert team.reserved_usd == 0 and team.spent_usd == usd("1")


def ask(grant_id: str) -> BudgetGrantRequest:
    return BudgetGrantRequest(grant_id=grant_id, holder="worker-1", want_usd=usd("0.1"),
                              min_usd=usd("0.01"), lease_s=600, team="team-a")  # fmt: skip


def test_no_grants_while_a_returned_grant_waits_too_long_for_its_settlements(
    tmp_path: Path,
) -> None:
    clock = [NOW]
    app = open_store(UsageApplication, Settings(state_dir=tmp_path), "usage")
    book = BudgetBook(app, clock=lambda: clock[0])
    book.load([BudgetDefinition(name="team-a", scope={"team": "team-a"}, window="daily",
                                limit_usd=usd("1"), mode="hard")])  # fmt: skip
    assert book.grant(ask("g-1")).granted
    book.return_grant(BudgetGrantReturn(grant_id="g-1", unused_usd=usd("0.05")))
    assert book.grant(ask("g-2")).granted  # its calls may well settle in a moment

    clock[0] = NOW + SETTLEMENT_LAG
    lagging = book.grant(ask("g-3"))
    assert not lagging.granted and "settlement lags" in (lagging.message or "")


async def test_a_hard_budget_holds_while_usage_events_stop_reaching_the_usage_service(
    settings: Settings, config_file: Path
) -> None:
    worst = worst_case(with_budgets(config_file))
    limit = worst * 40  # room for grants: the settlements they wait for are the ones that stop
    settings = with_budgets(
        config_file,
        {"name": "team-lag", "scope": {"team": "lag"}, "window": "daily", "limit_usd": str(limit),
         "mode": "hard"},
        timeout_s=1, num_retries=0, lease_margin_s=1,  # leases run out within the test
    )  # fmt: skip
    async with pipeline(settings) as (nc, _events, client):
        js = nc.jetstream()
        # settlements stop: the usage service no longer receives UsageRecorded
        await js.pause_consumer(subjects.EVENTS_STREAM, subjects.USAGE_CONSUMER,
                                (datetime.now(UTC) + timedelta(hours=1)).isoformat())  # fmt: skip

        async def send(n: int) -> list[dict[str, object]]:
            outcomes: list[dict[str, object]] = []
            for _ in range(n):
                try:
                    received = await client.complete(MESSAGES, model=MODEL, team_id="lag",
                                                     params={"max_tokens": 30})  # fmt: skip
                    outcomes.append({"cost_usd": received.cost_usd})
                except CompletionError as failed:
                    outcomes.append({"error_type": failed.failed.error_type.value})
            return outcomes

        first = await send(60)

        async def lapsed() -> bool:
            row = (await budget_status(nc))["team-lag"]
            return float(row["reserved_usd"]) == 0

        await wait_for(lapsed, 60, "the grants' leases to run out with their calls unsettled")
        later = await send(20)
    paid = [o for o in first + later if o.get("cost_usd") is not None]
    assert sum(settled_cost(float(str(o["cost_usd"]))) for o in paid) <= limit
    assert all(o.get("error_type") == "budget_exceeded" for o in later)
