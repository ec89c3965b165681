"""Two usage services on one store: a budget command that loses the save race to the other reads
its budgets back as saved and runs again, so a hard budget holds under concurrent writers.

Each service keeps its budgets in memory; the other's writes make them stale. Real SQLite store.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from llmbus.services.usage.application import BudgetBook, UsageApplication
from llmbus.services.usage.application.batch import Batch, Waiting
from llmbus.services.usage.domain import Budget
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    BudgetGrantRequest,
    BudgetGrantReturn,
    BudgetReservation,
)
from llmbus.shared.eventstore import open_store
from llmbus.shared.settings import Settings

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
TEAM = BudgetDefinition(
    name="team-a", scope={"team": "team-a"}, window="daily", limit_usd=Decimal(1), mode="hard"
)


@pytest.fixture
def books(tmp_path: Path) -> Iterator[tuple[BudgetBook, BudgetBook]]:
    """Two services' books on one store, both loaded before either writes again."""
    settings = Settings(state_dir=tmp_path, event_store="sqlite")
    first, second = (
        BudgetBook(open_store(UsageApplication, settings, "usage"), clock=lambda: NOW)
        for _ in range(2)
    )
    first.load([TEAM])
    second.load([TEAM])
    yield first, second
    first.app.close()
    second.app.close()


def reserve(book: BudgetBook, request_id: str, amount: str) -> bool:
    reservation = BudgetReservation(
        request_id=request_id, amount_usd=Decimal(amount), lease_s=60, team="team-a"
    )
    [(_, admission)] = book.apply(Batch(waiting=[Waiting(reservation)])).answered
    return admission.admitted


def usage(request_id: str, cost: float, grant_id: str | None = None) -> UsageRecorded:
    return UsageRecorded(
        usage_id=f"{request_id}:1", request_id=request_id, provider="sim", model="m",
        prompt_tokens=1, completion_tokens=1, total_tokens=2, cost_usd=cost, latency_ms=1,
        status="ok", team_id="team-a", grant_id=grant_id,
    )  # fmt: skip


def stored(book: BudgetBook) -> Budget:
    budget: Budget = book.app.repository.get(Budget.create_id("team-a"))
    return budget


def test_a_stale_service_reads_the_others_reservation_back_before_it_admits(
    books: tuple[BudgetBook, BudgetBook],
) -> None:
    first, second = books
    assert reserve(first, "r-1", "0.6")

    assert not reserve(second, "r-2", "0.6")  # its copy had room; the store has not

    assert stored(first).reserved_usd == Decimal("0.6")
    assert set(stored(first).reservations) == {"r-1"}
    assert second.budgets["team-a"].reserved_usd == Decimal("0.6")


def test_a_stale_service_grants_only_from_the_room_the_other_left(
    books: tuple[BudgetBook, BudgetBook],
) -> None:
    first, second = books
    assert reserve(first, "r-1", "0.6")
    ask = BudgetGrantRequest(grant_id="g-1", holder="w", want_usd=Decimal(1),
                             min_usd=Decimal("0.01"), lease_s=60, team="team-a")  # fmt: skip

    grant = second.grant(ask)

    assert grant.granted and grant.amount_usd == Decimal("0.1")  # a quarter of 0.4, not of 1
    assert stored(first).reserved_usd == Decimal("0.7")


def test_a_stale_service_returns_a_grant_and_settles_on_the_budget_as_stored(
    books: tuple[BudgetBook, BudgetBook],
) -> None:
    first, second = books
    ask = BudgetGrantRequest(grant_id="g-1", holder="w", want_usd=Decimal("0.2"),
                             min_usd=Decimal("0.01"), lease_s=60, team="team-a")  # fmt: skip
    assert second.grant(ask).amount_usd == Decimal("0.2")
    first.budgets["team-a"] = stored(first)  # the first has seen the grant; the second is stale
    assert reserve(second, "r-1", "0.3")

    assert first.return_grant(BudgetGrantReturn(grant_id="g-1", unused_usd=Decimal("0.2")))
    assert reserve(first, "r-2", "0.5")
    second.apply(Batch(settlements=[usage("r-1", 0.25)]))

    team = stored(first)
    assert set(team.reservations) == {"r-2"}
    assert (team.spent_usd, team.reserved_usd) == (Decimal("0.25"), Decimal("0.5"))


def test_a_call_recorded_by_both_services_is_stored_and_settled_once(
    books: tuple[BudgetBook, BudgetBook],
) -> None:
    first, second = books
    assert reserve(first, "r-1", "0.5")
    second.budgets["team-a"] = stored(second)

    assert first.app.record([usage("r-1", 0.4)], first) == 1
    assert second.app.record([usage("r-1", 0.4)], second) == 0  # lost the race: already stored

    team = stored(first)
    assert (team.spent_usd, team.reserved_usd) == (Decimal("0.4"), Decimal(0))
    assert second.budgets["team-a"].spent_usd == Decimal("0.4")


def test_a_budget_defined_by_both_services_is_defined_once(
    books: tuple[BudgetBook, BudgetBook],
) -> None:
    first, second = books
    other = BudgetDefinition(name="team-b", scope={"team": "team-b"}, window="daily",
                             limit_usd=Decimal(2), mode="soft")  # fmt: skip
    first.define(other)

    assert second.define(other).definition == other  # created by the first: read back, kept

    assert second.define(other.model_copy(update={"limit_usd": Decimal(3)})).version == 2
    assert first.app.repository.get(Budget.create_id("team-b")).limit_usd == Decimal(3)
