"""Budget grants: budget a worker holds and admits many requests against without a round trip.

The worker's ledger alone (time passed in), the Budget aggregate alone, the budget book on a
real SQLite usage store, and the whole path on a real nats-server with in-process services.
"""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.client import CompletionError
from llmbus.services.completion import admission
from llmbus.services.completion.grants import Grant, GrantLedger, Key
from llmbus.services.usage.application import BudgetBook, UsageApplication
from llmbus.services.usage.domain import Budget
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    BudgetGrantRequest,
    BudgetGrantReturn,
    settled_cost,
)
from llmbus.shared.eventstore import open_store
from llmbus.shared.settings import Settings
from support import (
    MAX_TOKENS,
    MESSAGES,
    MODEL,
    EventLog,
    budget_status,
    pipeline,
    wait_for,
    with_budgets,
    worst_case,
)

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
LEASE = timedelta(minutes=5)
KEY: Key = (None, "team-a", None, "m", None)


def usd(amount: str) -> Decimal:
    return Decimal(amount)


# The worker's ledger


def ledger_with(amount: str | None, admit_until: float = 100.0, idle_s: float = 1.0) -> GrantLedger:
    ledger = GrantLedger(idle_s=idle_s)
    held = None if amount is None else usd(amount)
    ledger.add(Grant("g-1", KEY, held, admit_until=admit_until, last_used=0.0))
    return ledger


def test_a_grant_admits_while_worst_cases_fit_then_closes_when_full() -> None:
    ledger = ledger_with("1.0")
    assert ledger.admit(KEY, "r-1", usd("0.4"), 0.0) == "g-1"
    assert ledger.admit(KEY, "r-2", usd("0.6"), 0.0) == "g-1"  # fits exactly
    assert ledger.admit((None, "team-b", None, "m", None), "r-x", usd("0"), 0.0) is None

    assert ledger.admit(KEY, "r-3", usd("0.01"), 0.0) is None  # full: ask for a fresh one
    assert KEY not in ledger.open and ledger.closed["g-1"].closed
    assert ledger.admit(KEY, "r-4", usd("0"), 0.0) is None  # closed admits nothing more
    assert ledger.grant_of("r-1") == "g-1" and ledger.grant_of("r-3") is None


def test_settling_frees_the_rest_of_the_worst_case_at_once() -> None:
    ledger = ledger_with("1.0")
    ledger.admit(KEY, "r-1", usd("0.6"), 0.0)
    assert ledger.settle("r-1", usd("0.1"), 0.1)
    assert not ledger.settle("r-1", usd("0.1"), 0.1)  # once

    assert ledger.admit(KEY, "r-2", usd("0.6"), 0.2) == "g-1"  # 0.1 + 0.6 fits now
    assert ledger.admit(KEY, "r-3", usd("0.3"), 0.2) == "g-1"
    grant = ledger.open[KEY]
    assert (grant.used_usd, grant.running, grant.admitted) == (usd("1.0"), 2, 3)


def test_a_grant_past_its_admission_time_closes() -> None:
    ledger = ledger_with("1.0", admit_until=10.0)
    assert ledger.admit(KEY, "r-1", usd("0.1"), 9.9) == "g-1"
    assert ledger.admit(KEY, "r-2", usd("0.1"), 10.0) is None
    assert KEY not in ledger.open and "g-1" in ledger.closed


def test_revoking_closes_every_open_grant_and_running_requests_still_settle() -> None:
    ledger = ledger_with("1.0")
    other: Key = (None, "team-b", None, "m", None)
    ledger.add(Grant("g-2", other, usd("1.0"), admit_until=100.0, last_used=0.0))
    ledger.admit(KEY, "r-1", usd("0.2"), 0.0)

    assert sorted(ledger.revoke()) == ["g-1", "g-2"]
    assert ledger.open == {} and ledger.admit(KEY, "r-2", usd("0.1"), 0.0) is None
    assert ledger.revoke() == []
    assert ledger.settle("r-1", usd("0.05"), 0.1)
    assert ledger.closed["g-1"].used_usd == usd("0.05")


def test_a_closed_grant_is_due_only_once_its_running_requests_have_ended() -> None:
    ledger = ledger_with("1.0")
    ledger.admit(KEY, "r-1", usd("0.2"), 0.0)
    ledger.admit(KEY, "r-2", usd("0.2"), 0.0)
    ledger.revoke()
    assert list(ledger.due(0.1)) == []
    ledger.settle("r-1", usd("0.05"), 0.1)
    assert list(ledger.due(0.2)) == []

    ledger.settle("r-2", usd("0.15"), 0.2)
    [due] = ledger.due(0.3)
    assert due.grant_id == "g-1" and due.unused_usd == usd("0.8") and due.admitted == 2
    assert ledger.held == ["g-1"]  # until the usage service has it back
    ledger.returned(due)
    assert ledger.held == [] and list(ledger.due(0.4)) == []


def test_an_idle_grant_closes_after_idle_s_but_one_with_a_running_request_does_not() -> None:
    ledger = ledger_with("1.0", idle_s=1.0)
    ledger.admit(KEY, "r-1", usd("0.1"), 0.5)
    assert list(ledger.due(5.0)) == [] and KEY in ledger.open  # r-1 still runs

    ledger.settle("r-1", usd("0.1"), 5.0)
    assert list(ledger.due(5.9)) == [] and KEY in ledger.open
    [due] = ledger.due(6.0)
    assert due.grant_id == "g-1" and due.closed and KEY not in ledger.open


def test_an_abandoned_request_keeps_its_worst_case_counted_as_used() -> None:
    ledger = ledger_with("1.0")
    ledger.admit(KEY, "r-1", usd("0.3"), 0.0)
    ledger.admit(KEY, "r-2", usd("0.2"), 0.0)
    ledger.settle("r-1", usd("0.1"), 0.1)
    ledger.abandon("r-2")
    ledger.abandon("r-2")  # a second end changes nothing
    ledger.abandon("never-admitted")

    grant = ledger.open[KEY]
    assert (grant.running, grant.used_usd, grant.unused_usd) == (0, usd("0.3"), usd("0.7"))
    assert not ledger.settle("r-2", usd("0.01"), 0.2)  # its cost is unknown here for good


def test_a_grant_with_no_hard_budget_to_bound_admits_anything_and_leaves_nothing_unused() -> None:
    ledger = ledger_with(None)
    assert ledger.admit(KEY, "r-1", usd("1000000"), 0.0) == "g-1"
    ledger.settle("r-1", usd("3"), 0.1)
    assert ledger.open[KEY].unused_usd == 0


# The Budget aggregate


def budget(**fields: Any) -> Budget:
    terms: dict[str, Any] = {"name": "team-a", "scope": {"team": "team-a"}, "window": "daily",
                             "limit_usd": usd("10"), "mode": "hard"} | fields  # fmt: skip
    return Budget.define(BudgetDefinition(**terms), NOW)


def event_names(budget: Budget) -> list[str]:
    return [type(e).__name__ for e in budget.collect_events()]


def test_a_grant_holds_its_amount_and_its_settlements_move_it_from_held_to_spent() -> None:
    team = budget()
    team.grant("g-1", usd("4"), NOW, LEASE, "worker-1")
    team.grant("g-1", usd("4"), NOW, LEASE, "worker-1")  # asked again: held once
    assert team.reserved_usd == usd("4") and team.room_usd(NOW) == usd("6")

    team.settle_granted("g-1", "r-1", usd("0.5"), NOW)
    assert team.spent_usd == usd("0.5") and team.reserved_usd == usd("3.5")
    assert team.room_usd(NOW) == usd("6")  # what the grant spent came out of what it held
    team.settle_granted("g-unknown", "r-2", usd("1"), NOW)
    assert team.spent_usd == usd("0.5")
    assert event_names(team) == ["Defined", "Granted", "SettledUnderGrant"]


def test_a_returned_grant_releases_its_unused_part_and_holds_the_rest_until_it_settles() -> None:
    team = budget()
    team.grant("g-1", usd("4"), NOW, LEASE, "worker-1")
    team.settle_granted("g-1", "r-1", usd("0.5"), NOW)
    # the worker's three calls cost 0.5 + 0.25 + 0.25: two have not arrived here yet
    team.return_grant("g-1", usd("3"), NOW)
    team.return_grant("g-1", usd("3"), NOW)  # returned twice: released once
    assert team.reserved_usd == usd("0.5") and "g-1" in team.reservations

    team.settle_granted("g-1", "r-2", usd("0.25"), NOW)
    assert team.reserved_usd == usd("0.25") and "g-1" in team.reservations
    team.settle_granted("g-1", "r-3", usd("0.25"), NOW)
    assert team.reserved_usd == 0 and "g-1" not in team.reservations
    assert team.spent_usd == usd("1") and team.knows_grant("g-1")

    team.settle_granted("g-1", "r-4", usd("0.2"), NOW)  # after it closed: still spent, once
    assert team.spent_usd == usd("1.2") and team.reserved_usd == 0
    assert event_names(team).count("GrantReturned") == 1


def test_an_expired_grant_is_released_and_a_late_settlement_under_it_still_counts() -> None:
    team = budget()
    team.grant("g-1", usd("4"), NOW, LEASE, "worker-1")
    team.settle_granted("g-1", "r-1", usd("1"), NOW)

    assert team.expire_leases(NOW + LEASE) == ["g-1"]
    assert team.reserved_usd == 0 and team.remaining_usd == usd("9")
    team.settle_granted("g-1", "r-2", usd("0.5"), NOW + LEASE)
    assert team.spent_usd == usd("1.5") and team.reserved_usd == 0
    team.collect_events()
    team.return_grant("g-1", usd("2.5"), NOW + LEASE)  # nothing held any more
    assert event_names(team) == [] and team.reserved_usd == 0


def test_a_threshold_crossed_under_a_grant_fires_once() -> None:
    team = budget(thresholds=[0.5])
    team.grant("g-1", usd("8"), NOW, LEASE, "worker-1")
    team.settle_granted("g-1", "r-1", usd("4"), NOW)
    team.collect_events()

    team.settle_granted("g-1", "r-2", usd("1.5"), NOW)
    team.settle_granted("g-1", "r-3", usd("1"), NOW)
    fired = [e for e in team.collect_events() if isinstance(e, Budget.ThresholdReached)]
    assert [(e.threshold, e.request_id) for e in fired] == [(0.5, "r-2")]


# The budget book on a real SQLite store


@pytest.fixture
def book(tmp_path: Path) -> BudgetBook:
    app = open_store(UsageApplication, Settings(state_dir=tmp_path, event_store="sqlite"), "usage")
    book = BudgetBook(app, clock=lambda: NOW)
    book.load([
        BudgetDefinition(name="team-a", scope={"team": "team-a"}, window="daily",
                         limit_usd=usd("1.00"), mode="hard"),
        BudgetDefinition(name="all", window="daily", limit_usd=usd("100"), mode="soft"),
    ])  # fmt: skip
    return book


def ask(
    grant_id: str, want: str, min_usd: str = "0.01", team: str = "team-a"
) -> BudgetGrantRequest:
    return BudgetGrantRequest(
        grant_id=grant_id, holder="worker-1", want_usd=usd(want), min_usd=usd(min_usd),
        lease_s=60, team=team,
    )  # fmt: skip


def usage(
    request_id: str, cost: float, grant_id: str | None, team: str = "team-a"
) -> UsageRecorded:
    return UsageRecorded(
        usage_id=f"{request_id}:1", request_id=request_id, provider="sim", model="m",
        prompt_tokens=1, completion_tokens=1, total_tokens=2, cost_usd=cost, latency_ms=1,
        status="ok", team_id=team, grant_id=grant_id,
    )  # fmt: skip


def stored(book: BudgetBook, name: str) -> Budget:
    budget: Budget = book.app.repository.get(Budget.create_id(name))
    return budget


def test_a_grant_is_a_quarter_of_the_room_left_capped_by_what_the_worker_wants(
    book: BudgetBook,
) -> None:
    first = book.grant(ask("g-1", want="10"))
    assert first.granted and first.amount_usd == usd("0.25")
    assert sorted(first.budgets) == ["all", "team-a"]
    assert book.grant(ask("g-1", want="10")) == first  # asked again: the same, held once
    assert stored(book, "team-a").reserved_usd == usd("0.25")
    assert stored(book, "all").reserved_usd == 0  # soft budgets only count its calls

    second = book.grant(ask("g-2", want="0.05"))  # a quarter of 0.75 is more than it wants
    third = book.grant(ask("g-3", want="10"))
    assert (second.amount_usd, third.amount_usd) == (usd("0.05"), usd("0.175"))
    assert stored(book, "team-a").reserved_usd == usd("0.475")


def test_no_grant_when_the_share_is_below_the_minimum_or_reservations_wait_for_room(
    book: BudgetBook,
) -> None:
    small = book.grant(ask("g-1", want="10", min_usd="0.26"))
    blocked = book.grant(ask("g-2", want="10"), blocked=True)
    assert not small.granted and "too little room" in (small.message or "")
    assert not blocked.granted and "waiting" in (blocked.message or "")
    assert small.amount_usd is None and blocked.amount_usd is None
    for name in ("team-a", "all"):
        assert stored(book, name).reservations == {}


def test_a_grant_matching_only_soft_budgets_is_unbounded_and_counts_its_calls_once(
    book: BudgetBook,
) -> None:
    grant = book.grant(ask("g-1", want="10", team="team-z"))
    assert grant.granted and grant.amount_usd is None and grant.budgets == ["all"]

    call = usage("r-1", 0.3, "g-1", team="team-z")
    assert book.app.record([call], book) == 1
    assert book.app.record([call], book) == 0  # redelivered: deduped by usage_id
    assert book.budgets["all"].spent_usd == usd("0.3") == stored(book, "all").spent_usd
    assert stored(book, "team-a").spent_usd == 0

    assert book.return_grant(BudgetGrantReturn(grant_id="g-1", unused_usd=usd("0"))) == ["all"]
    assert stored(book, "all").reservations == {} and stored(book, "all").knows_grant("g-1")


def test_calls_under_a_grant_settle_once_and_its_return_brings_reserved_back_to_zero(
    book: BudgetBook,
) -> None:
    grant = book.grant(ask("g-1", want="10"))
    assert grant.amount_usd == usd("0.25")
    first, second = usage("r-1", 0.1, "g-1"), usage("r-2", 0.05, "g-1")
    book.app.record([first], book)
    book.app.record([first], book)  # the same UsageRecorded twice
    assert stored(book, "team-a").spent_usd == usd("0.1")
    assert stored(book, "team-a").reserved_usd == usd("0.15")

    # the worker's calls cost 0.15 in all; r-2's UsageRecorded has not arrived yet
    returned = BudgetGrantReturn(grant_id="g-1", unused_usd=usd("0.10"), admitted=2)
    assert sorted(book.return_grant(returned)) == ["all", "team-a"]
    assert stored(book, "team-a").reserved_usd == usd("0.05")
    book.app.record([second], book)
    book.app.record([second], book)

    for name in ("team-a", "all"):
        reloaded, in_memory = stored(book, name), book.budgets[name]
        assert reloaded.spent_usd == in_memory.spent_usd == usd("0.15")
        assert reloaded.reserved_usd == in_memory.reserved_usd == 0
        assert reloaded.reservations == {} and reloaded.knows_grant("g-1")
    assert stored(book, "team-a").room_usd(NOW) == usd("0.85")


# The whole path: a real nats-server, the completion worker and usage service in-process


async def grant_asks(nc: NatsClient) -> list[Msg]:
    """Every ask on llmbus.budget.grant from now on (a plain subscriber sees each one)."""
    asks: list[Msg] = []

    async def seen(msg: Msg) -> None:
        asks.append(msg)

    await nc.subscribe(subjects.BUDGET_GRANT, cb=seen)
    await nc.flush()
    return asks


async def usage_service_ready(nc: NatsClient) -> None:
    # llmbus.budget.set is its last subscription: grants asked from now on are not revoked
    await wait_for(lambda: answers(nc, subjects.BUDGET_SET), 30, "the usage service")


async def complete(client: Any, team: str) -> None:
    await client.complete(MESSAGES, model=MODEL, team_id=team, params={"max_tokens": MAX_TOKENS})


async def all_settled(nc: NatsClient, events: EventLog, name: str, calls: int) -> None:
    async def settled() -> bool:
        done = len(events.on(subjects.USAGE_RECORDED)) == calls
        return done and (await budget_status(nc))[name]["reserved_usd"] == 0

    await wait_for(settled, 30, f"{calls} calls settled and nothing held in {name}")


def spent_and_costs(status: dict[str, Any], events: EventLog) -> tuple[Decimal, Decimal]:
    costs = sum(settled_cost(e["cost_usd"]) for e in events.on(subjects.USAGE_RECORDED))
    return Decimal(str(status["spent_usd"])), Decimal(costs)


async def test_sequential_requests_share_one_grant_and_its_return_releases_what_it_held(
    settings: Settings, config_file: Path
) -> None:
    settings = with_budgets(
        config_file,
        {"name": "team-a-daily", "scope": {"team": "team-a"}, "window": "daily",
         "limit_usd": str(worst_case(settings) * 1000), "mode": "hard"},
    )  # fmt: skip
    async with pipeline(settings) as (nc, events, client):
        await usage_service_ready(nc)
        asks = await grant_asks(nc)
        for _ in range(20):
            await complete(client, "team-a")
        await all_settled(nc, events, "team-a-daily", 20)
        status = (await budget_status(nc))["team-a-daily"]

    grants = Counter(e["grant_id"] for e in events.on(subjects.USAGE_RECORDED))
    [(grant_id, admitted)] = grants.most_common(1)
    assert grant_id is not None and grant_id.startswith("grant:") and admitted >= 15
    assert None not in grants
    assert 1 <= len(asks) <= 3  # not one round trip per request
    spent, costs = spent_and_costs(status, events)
    assert spent == costs > 0


async def test_a_budget_created_at_run_time_applies_despite_a_grant_held_for_its_requests(
    settings: Settings, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the worker keeps an idle grant: only the budget change can take it away
    monkeypatch.setattr(admission, "GrantLedger", partial(GrantLedger, idle_s=600))
    settings = with_budgets(
        config_file,
        {"name": "team-other-daily", "scope": {"team": "team-other"}, "window": "daily",
         "limit_usd": "10", "mode": "hard"},
    )  # fmt: skip
    async with pipeline(settings) as (nc, events, client):
        await usage_service_ready(nc)
        await complete(client, "team-g")
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 1, 30, "the first call")
        [first] = events.on(subjects.USAGE_RECORDED)
        assert first["grant_id"] is not None  # unbounded: no budget matched team-g

        tiny = {"name": "team-g-daily", "scope": {"team": "team-g"}, "window": "daily",
                "limit_usd": "0.0000001", "mode": "hard"}  # fmt: skip
        await nc.request(subjects.BUDGET_SET, json.dumps(tiny).encode(), timeout=10)
        with pytest.raises(CompletionError) as refused:
            await complete(client, "team-g")
        await wait_for(lambda: bool(events.on(subjects.BUDGET_EXCEEDED)), 30, "the refusal")
    assert refused.value.failed.error_type == "budget_exceeded"
    assert "team-g-daily" in refused.value.failed.message
    assert [e["budget"] for e in events.on(subjects.BUDGET_EXCEEDED)] == ["team-g-daily"]
    assert len(events.on(subjects.USAGE_RECORDED)) == 1  # the refused request called no model


async def test_with_grants_off_every_request_reserves_on_its_own_and_still_settles(
    settings: Settings, config_file: Path
) -> None:
    settings = with_budgets(
        config_file,
        {"name": "team-a-daily", "scope": {"team": "team-a"}, "window": "daily",
         "limit_usd": str(worst_case(settings) * 1000), "mode": "hard"},
        grant_requests=0,
    )  # fmt: skip
    assert settings.completion.grant_requests == 0
    async with pipeline(settings) as (nc, events, client):
        await usage_service_ready(nc)
        asks = await grant_asks(nc)
        for _ in range(5):
            await complete(client, "team-a")
        await all_settled(nc, events, "team-a-daily", 5)
        status = (await budget_status(nc))["team-a-daily"]
    assert [e["grant_id"] for e in events.on(subjects.USAGE_RECORDED)] == [None] * 5
    assert asks == []
    spent, costs = spent_and_costs(status, events)
    assert spent == costs > 0


def test_a_grant_runs_low_once_less_than_the_given_room_is_left() -> None:
    ledger = GrantLedger()
    key: Key = ("u", "t", None, "m", None)
    ledger.add(Grant("g", key, Decimal(10), admit_until=100.0, last_used=0.0))
    for i in range(6):
        assert ledger.admit(key, f"r{i}", Decimal(1), now=1.0)
    assert not ledger.running_low(key, Decimal(4))  # 4 left: not below 4
    assert ledger.admit(key, "r6", Decimal(1), now=1.0)
    assert ledger.running_low(key, Decimal(4))
    for request_id in ("r5", "r6"):  # their true costs give most of their worst cases back
        ledger.settle(request_id, Decimal("0.1"), now=2.0)
    assert not ledger.running_low(key, Decimal(4))  # 10 - (5 running + 0.2 spent) = 4.8 left
    unbounded = ("v", None, None, "m", None)
    ledger.add(Grant("h", unbounded, None, admit_until=100.0, last_used=0.0))
    assert not ledger.running_low(unbounded, Decimal(1000))
