"""Admission batches: budget commands applied together in one transaction, and reservations
that wait for open ones to settle instead of being refused. On a real SQLite usage store."""

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from llmbus.services.usage.application import AdmissionDesk, BudgetBook, UsageApplication
from llmbus.services.usage.application.batch import Batch, Waiting
from llmbus.services.usage.domain import Budget, Cover
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import BudgetDefinition, BudgetReservation
from llmbus.shared.eventstore import open_store
from llmbus.shared.settings import Settings
from support import wait_for

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
LIMIT = Decimal("1.00")


@pytest.fixture
def book(tmp_path: Path) -> BudgetBook:
    settings = Settings(state_dir=tmp_path, event_store="sqlite")
    app = open_store(UsageApplication, settings, "usage")
    book = BudgetBook(app, clock=lambda: NOW)
    book.load([
        BudgetDefinition(name="team-a", scope={"team": "team-a"}, window="daily",
                         limit_usd=LIMIT, mode="hard"),
        BudgetDefinition(name="all", window="daily", limit_usd=Decimal(100), mode="soft"),
    ])  # fmt: skip
    return book


def reservation(request_id: str, amount: str, wait_s: float = 10.0) -> BudgetReservation:
    return BudgetReservation(
        request_id=request_id, amount_usd=Decimal(amount), lease_s=60, wait_s=wait_s,
        team="team-a",
    )  # fmt: skip


def usage(request_id: str, cost: float) -> UsageRecorded:
    return UsageRecorded(
        usage_id=f"{request_id}:1", request_id=request_id, provider="sim", model="m",
        prompt_tokens=1, completion_tokens=1, total_tokens=2, cost_usd=cost, latency_ms=1,
        status="ok", team_id="team-a",
    )  # fmt: skip


def stored(book: BudgetBook, name: str) -> Budget:
    return book.app.repository.get(Budget.create_id(name))  # type: ignore[no-any-return]


def test_cover_tells_now_later_and_never_apart() -> None:
    team = Budget.define(
        BudgetDefinition(name="t", window="daily", limit_usd=LIMIT, mode="hard"), NOW
    )
    team.reserve("open", Decimal("0.70"), NOW, lease=timedelta(minutes=1))
    assert team.cover("new", Decimal("0.30"), NOW) is Cover.NOW
    assert team.cover("new", Decimal("0.31"), NOW) is Cover.LATER  # only "open" is in the way
    assert team.cover("open", Decimal("0.90"), NOW) is Cover.NOW  # already reserved
    team.settle("open", Decimal("0.60"), NOW)
    assert team.cover("new", Decimal("0.41"), NOW) is Cover.NEVER  # spent is spent


def test_a_reservation_blocked_only_by_open_ones_waits_and_is_admitted_after_they_settle(
    book: BudgetBook,
) -> None:
    first = book.apply(Batch(waiting=[Waiting(reservation("r1", "0.80"), may_wait=True)]))
    assert [a.admitted for _, a in first.answered] == [True]

    second = Waiting(reservation("r2", "0.80"), may_wait=True)
    held = book.apply(Batch(waiting=[second]))
    assert held.answered == [] and held.waiting == [second]
    assert stored(book, "team-a").reserved_usd == Decimal("0.80")  # nothing reserved for r2

    freed = book.apply(Batch(settlements=[usage("r1", 0.1)], waiting=held.waiting))
    assert [(w.reservation.request_id, a.admitted) for w, a in freed.answered] == [("r2", True)]
    team = stored(book, "team-a")  # both commands are in the store, saved together
    assert team.spent_usd == Decimal("0.1") and team.reserved_usd == Decimal("0.80")


def test_a_reservation_that_can_never_fit_is_refused_at_once_even_when_it_may_wait(
    book: BudgetBook,
) -> None:
    book.apply(Batch(waiting=[Waiting(reservation("r1", "0.90"))]))
    book.apply(Batch(settlements=[usage("r1", 0.9)]))
    result = book.apply(Batch(waiting=[Waiting(reservation("r2", "0.20"), may_wait=True)]))
    [(_, refusal)] = result.answered
    assert not refusal.admitted and refusal.refused_by == "team-a"
    assert result.refused == 1


def test_a_waiting_reservation_past_its_deadline_is_refused_with_the_budget_named(
    book: BudgetBook,
) -> None:
    book.apply(Batch(waiting=[Waiting(reservation("r1", "0.80"))]))
    result = book.apply(Batch(waiting=[Waiting(reservation("r2", "0.80"), may_wait=False)]))
    [(_, refusal)] = result.answered
    assert not refusal.admitted and "team-a" in (refusal.message or "")


async def test_the_desk_holds_a_reservation_until_a_settlement_frees_room(
    book: BudgetBook,
) -> None:
    async def on_loop(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    refusals: list[int] = []
    desk = AdmissionDesk(book, on_loop, on_refused=lambda: refusals.append(1))
    stop = asyncio.Event()
    running = asyncio.create_task(desk.run(stop))
    try:
        assert (await desk.reserve(reservation("r1", "0.80"))).admitted
        waiting = asyncio.create_task(desk.reserve(reservation("r2", "0.80")))
        await wait_for(lambda: len(desk.waiting) == 1, 5, "r2 held for room")
        assert not waiting.done()
        desk.settle(usage("r1", 0.15))
        admission = await asyncio.wait_for(waiting, 5)
        assert admission.admitted
        # a reservation that may not wait is refused at once, and the refusal is announced
        refused = await asyncio.wait_for(desk.reserve(reservation("r3", "0.80", wait_s=0)), 5)
        assert not refused.admitted and refusals == [1]
    finally:
        stop.set()
        desk.wake.set()
        await running


async def test_a_stopping_desk_fails_what_waits_instead_of_refusing_it(book: BudgetBook) -> None:
    async def on_loop(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    desk = AdmissionDesk(book, on_loop, on_refused=lambda: None)
    stop = asyncio.Event()
    running = asyncio.create_task(desk.run(stop))
    assert (await desk.reserve(reservation("r1", "0.80"))).admitted
    waiting = asyncio.create_task(desk.reserve(reservation("r2", "0.80")))
    await wait_for(lambda: len(desk.waiting) == 1, 5, "r2 held for room")
    stop.set()
    desk.wake.set()
    await running
    with pytest.raises(RuntimeError, match="stopping"):
        await waiting  # the worker gets an error reply and the request is redelivered
    with pytest.raises(RuntimeError, match="stopping"):
        await desk.reserve(reservation("r3", "0.10"))
    assert stored(book, "team-a").reserved_usd == Decimal("0.80")  # r2 reserved nothing
