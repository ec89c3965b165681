"""The Budget aggregate alone: reservations, settlements, thresholds and windows, no store."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from pydantic import ValidationError

from llmbus.services.usage.domain import (
    LIFETIME_START,
    Budget,
    BudgetExceededError,
    BudgetRenamedError,
    UnknownReservationError,
    window_start,
)
from llmbus.shared.contracts.budget import BudgetDefinition

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def definition(**fields: Any) -> BudgetDefinition:
    base: dict[str, Any] = {"name": "team-a", "scope": {"team": "a"}, "window": "daily"}
    base |= {"limit_usd": Decimal("10"), "mode": "hard"}
    return BudgetDefinition(**(base | fields))


def budget(**fields: Any) -> Budget:
    return Budget.define(definition(**fields), NOW)


def new_events(budget: Budget) -> list[str]:
    return [type(e).__name__ for e in budget.collect_events()]


def usd(amount: str) -> Decimal:
    return Decimal(amount)


def test_a_budget_name_always_names_the_same_budget() -> None:
    assert Budget.create_id("team-a") == Budget.create_id("team-a") != Budget.create_id("team-b")
    assert budget().id == Budget.create_id("team-a")
    assert new_events(budget()) == ["Defined"]


def test_a_hard_budget_refuses_the_reservation_that_would_overspend_and_records_it() -> None:
    team = budget()
    team.reserve("r-1", usd("6"), NOW, LEASE)
    team.collect_events()

    with pytest.raises(BudgetExceededError) as refused:
        team.reserve("r-2", usd("4.01"), NOW, LEASE)

    assert str(refused.value) == (
        "budget 'team-a' cannot cover $4.01: spent $0.00 + reserved $6.00 of limit $10.00"
    )
    [exceeded] = team.collect_events()
    assert type(exceeded).__name__ == "Exceeded"
    assert exceeded.request_id == "r-2"  # type: ignore[attr-defined]
    assert exceeded.requested_usd == usd("4.01")  # type: ignore[attr-defined]
    assert exceeded.reserved_usd == usd("6")  # type: ignore[attr-defined]
    assert exceeded.limit_usd == usd("10")  # type: ignore[attr-defined]
    assert list(team.reservations) == ["r-1"]

    team.reserve("r-3", usd("4"), NOW, LEASE)
    assert team.remaining_usd == 0


def test_reservations_and_settlements_never_let_a_hard_budget_overspend() -> None:
    rng = random.Random(20250312)
    team = budget(limit_usd=usd("25"))
    open_amounts: dict[str, Decimal] = {}
    settled = Decimal(0)
    refusals = 0
    for step in range(500):
        now = NOW + timedelta(seconds=step)
        action = rng.choice(["reserve", "reserve", "settle", "release"])
        if action == "reserve":
            amount = Decimal(rng.randint(1, 400)) / 100
            try:
                team.reserve(f"r-{step}", amount, now, timedelta(hours=1))
                open_amounts[f"r-{step}"] = amount
            except BudgetExceededError:
                refusals += 1
        elif open_amounts:
            request_id = rng.choice(sorted(open_amounts))
            if action == "settle":
                cost = open_amounts[request_id] * Decimal(rng.randint(0, 100)) / 100
                team.settle(request_id, cost, now)
                settled += cost
            else:
                team.release(request_id, "failed", now)
            del open_amounts[request_id]
        assert team.spent_usd + team.reserved_usd <= team.limit_usd
        assert team.reserved_usd == sum(open_amounts.values(), Decimal(0))
        assert team.spent_usd == settled
    assert refusals > 0


def test_the_same_request_reserved_twice_reserves_once() -> None:
    team = budget()
    team.reserve("r-1", usd("3"), NOW, LEASE)
    team.collect_events()

    team.reserve("r-1", usd("3"), NOW + timedelta(seconds=1), LEASE)

    assert new_events(team) == []
    assert team.reserved_usd == usd("3")


def test_a_settlement_delivered_twice_counts_once() -> None:
    team = budget()
    team.reserve("r-1", usd("3"), NOW, LEASE)

    team.settle("r-1", usd("1.25"), NOW)
    team.settle("r-1", usd("1.25"), NOW)
    team.settle("never-reserved", usd("9"), NOW)

    assert team.spent_usd == usd("1.25")
    assert team.reserved_usd == 0
    assert team.remaining_usd == usd("8.75")
    assert new_events(team).count("Settled") == 1


def test_a_soft_budget_never_refuses_and_fires_each_threshold_once() -> None:
    soft = budget(mode="soft", limit_usd=usd("1"))
    soft.reserve("r-1", usd("5"), NOW, LEASE)
    soft.reserve("r-2", usd("5"), NOW, LEASE)
    assert soft.remaining_usd == usd("-9")
    soft.collect_events()

    soft.settle("r-1", usd("0.85"), NOW)
    fired = [e for e in soft.collect_events() if type(e).__name__ == "ThresholdReached"]
    assert [e.threshold for e in fired] == [0.5, 0.8]  # type: ignore[attr-defined]
    assert fired[0].spent_usd == usd("0.85")  # type: ignore[attr-defined]
    assert fired[0].window_start == datetime(2025, 3, 12, tzinfo=UTC)  # type: ignore[attr-defined]

    soft.settle("r-2", usd("0.15"), NOW)
    fired = [e for e in soft.collect_events() if type(e).__name__ == "ThresholdReached"]
    assert [e.threshold for e in fired] == [1.0]  # type: ignore[attr-defined]
    assert soft.spent_usd == soft.limit_usd
    assert soft.fired == {0.5, 0.8, 1.0}

    soft.reserve("r-3", usd("1"), NOW, LEASE)
    soft.settle("r-3", usd("1"), NOW)
    assert "ThresholdReached" not in new_events(soft)


def test_a_new_window_resets_spend_fires_again_and_carries_in_flight_reservations() -> None:
    team = budget(mode="soft")
    team.reserve("r-1", usd("6"), NOW, LEASE)
    team.reserve("r-2", usd("2"), NOW, timedelta(days=2))
    team.settle("r-1", usd("6"), NOW)
    assert team.fired == {0.5}
    team.collect_events()

    tomorrow = NOW + timedelta(days=1)
    team.reserve("r-3", usd("1"), tomorrow, LEASE)

    assert new_events(team) == ["WindowRolledOver", "Reserved"]
    assert team.window_start == datetime(2025, 3, 13, tzinfo=UTC)
    assert team.spent_usd == 0 and team.fired == set()
    assert set(team.reservations) == {"r-2", "r-3"}
    team.settle("r-2", usd("5"), tomorrow)
    assert team.spent_usd == usd("5") and team.fired == {0.5}


def test_a_clock_behind_the_current_window_never_rolls_it_back() -> None:
    team = budget()
    team.settle("r-0", usd("0"), NOW + timedelta(days=1))
    team.reserve("r-1", usd("1"), NOW, LEASE)
    assert team.window_start == datetime(2025, 3, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "timezone", "at", "start"),
    [
        ("daily", "UTC", "2025-03-12T23:59:59+00:00", "2025-03-12T00:00:00+00:00"),
        ("weekly", "UTC", "2025-03-16T12:00:00+00:00", "2025-03-10T00:00:00+00:00"),
        ("weekly", "UTC", "2025-03-10T00:00:00+00:00", "2025-03-10T00:00:00+00:00"),
        ("monthly", "UTC", "2025-03-31T23:00:00+00:00", "2025-03-01T00:00:00+00:00"),
        ("lifetime", "UTC", "2025-03-31T23:00:00+00:00", "1970-01-01T00:00:00+00:00"),
        # Berlin springs forward on 2025-03-30: midnight is 23:00 UTC before, 22:00 UTC after.
        ("daily", "Europe/Berlin", "2025-03-29T23:30:00+00:00", "2025-03-29T23:00:00+00:00"),
        ("daily", "Europe/Berlin", "2025-03-30T22:30:00+00:00", "2025-03-30T22:00:00+00:00"),
        ("daily", "Europe/Berlin", "2025-03-30T21:59:00+00:00", "2025-03-29T23:00:00+00:00"),
        ("weekly", "Europe/Berlin", "2025-03-30T21:00:00+00:00", "2025-03-23T23:00:00+00:00"),
        ("weekly", "Europe/Berlin", "2025-03-30T22:00:00+00:00", "2025-03-30T22:00:00+00:00"),
        ("monthly", "Europe/Berlin", "2025-03-31T21:59:00+00:00", "2025-02-28T23:00:00+00:00"),
        ("monthly", "Europe/Berlin", "2025-03-31T22:00:00+00:00", "2025-03-31T22:00:00+00:00"),
        # Berlin falls back on 2025-10-26, a 25-hour day.
        ("daily", "Europe/Berlin", "2025-10-26T22:59:00+00:00", "2025-10-25T22:00:00+00:00"),
        ("daily", "Europe/Berlin", "2025-10-26T23:00:00+00:00", "2025-10-26T23:00:00+00:00"),
        # Santiago's clocks skip midnight on 2024-09-08: the day begins at 01:00 local.
        ("daily", "America/Santiago", "2024-09-08T12:00:00+00:00", "2024-09-08T04:00:00+00:00"),
    ],
)
def test_windows_start_at_local_midnight_across_dst(
    window: Any, timezone: str, at: str, start: str
) -> None:
    found = window_start(window, timezone, datetime.fromisoformat(at))
    assert found == datetime.fromisoformat(start)
    assert found.tzinfo == UTC


def test_a_window_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        window_start("daily", "UTC", datetime(2025, 3, 12))
    assert window_start("lifetime", "UTC", NOW) == LIFETIME_START


def test_a_berlin_budget_rolls_over_at_berlin_midnight() -> None:
    berlin = budget(timezone="Europe/Berlin")
    assert berlin.window_start == datetime(2025, 3, 11, 23, tzinfo=UTC)
    berlin.reserve("r-1", usd("1"), datetime(2025, 3, 12, 22, 59, tzinfo=UTC), LEASE)
    assert "WindowRolledOver" not in new_events(berlin)
    berlin.reserve("r-2", usd("1"), datetime(2025, 3, 12, 23, tzinfo=UTC), LEASE)
    assert new_events(berlin)[0] == "WindowRolledOver"


def test_lease_expiry_releases_only_expired_reservations() -> None:
    team = budget()
    team.reserve("short", usd("2"), NOW, timedelta(minutes=1))
    team.reserve("long", usd("3"), NOW, timedelta(minutes=10))
    team.collect_events()

    assert team.expire_leases(NOW + timedelta(seconds=59)) == []
    assert team.expire_leases(NOW + timedelta(minutes=1)) == ["short"]

    [released] = team.collect_events()
    assert released.reason == "lease_expired"  # type: ignore[attr-defined]
    assert list(team.reservations) == ["long"]
    assert team.reserved_usd == usd("3")


def test_a_reservation_that_outlives_its_lease_stops_blocking_new_ones() -> None:
    team = budget()
    team.reserve("dead-worker", usd("9"), NOW, LEASE)
    with pytest.raises(BudgetExceededError):
        team.reserve("r-2", usd("5"), NOW + timedelta(minutes=1), LEASE)

    team.reserve("r-2", usd("5"), NOW + LEASE, LEASE)

    assert list(team.reservations) == ["r-2"]


def test_a_late_settlement_after_lease_expiry_still_counts_once() -> None:
    team = budget()
    team.reserve("slow", usd("2"), NOW, LEASE)
    team.expire_leases(NOW + LEASE)

    team.settle("slow", usd("1.5"), NOW + LEASE)
    team.settle("slow", usd("1.5"), NOW + LEASE)

    assert team.spent_usd == usd("1.5")


def test_a_lease_of_a_settled_or_re_reserved_request_expires_only_its_open_reservation() -> None:
    team = budget(limit_usd=usd("10"))
    team.reserve("settled", usd("1"), NOW, LEASE)
    team.reserve("again", usd("1"), NOW, LEASE)
    team.settle("settled", usd("0.5"), NOW)
    team.release("again", "retry", NOW)
    team.reserve("again", usd("1"), NOW + LEASE, LEASE)  # a redelivery, with a later lease
    assert team.next_expiry == NOW + 2 * LEASE
    assert team.expire_leases(NOW + LEASE) == []  # the stale entries expire nothing
    assert team.expire_leases(NOW + 2 * LEASE) == ["again"]
    assert team.next_expiry is None and team.reserved_usd == 0


def test_a_released_reservation_frees_its_amount_and_a_second_release_does_nothing() -> None:
    team = budget()
    team.reserve("r-1", usd("4"), NOW, LEASE)
    team.collect_events()

    team.release("r-1", "failed", NOW)
    team.release("r-1", "failed", NOW)
    team.settle("r-1", usd("4"), NOW)

    assert new_events(team) == ["Released"]
    assert team.spent_usd == 0 and team.remaining_usd == usd("10")
    with pytest.raises(UnknownReservationError, match="'r-1'"):
        team.reservation("r-1")


def test_redefining_the_limit_takes_effect_for_the_next_reservation() -> None:
    team = budget()
    team.reserve("r-1", usd("4"), NOW, LEASE)
    team.settle("r-1", usd("4"), NOW)
    with pytest.raises(BudgetExceededError):
        team.reserve("r-2", usd("7"), NOW, LEASE)
    team.collect_events()

    team.redefine(definition(limit_usd=usd("20"), thresholds=[0.1, 0.5]), NOW)

    assert new_events(team) == ["Redefined", "ThresholdReached"]
    assert team.fired == {0.1}
    team.reserve("r-2", usd("7"), NOW, LEASE)
    assert team.definition == definition(limit_usd=usd("20"), thresholds=[0.1, 0.5])


def test_a_budget_cannot_be_redefined_under_another_name() -> None:
    with pytest.raises(BudgetRenamedError, match="'team-a' cannot be redefined as 'team-b'"):
        budget().redefine(definition(name="team-b"), NOW)


def test_a_definition_matches_requests_in_its_scope() -> None:
    scoped = definition(scope={"team": "a", "model": "gpt-4o"})
    assert scoped.matches({"team": "a", "model": "gpt-4o", "user": "ann"})
    assert not scoped.matches({"team": "a", "model": "gpt-4o-mini"})
    assert not scoped.matches({"team": "a", "model": None})
    assert definition(scope={}).matches({"team": None})


def test_thresholds_are_kept_in_ascending_order() -> None:
    assert definition(thresholds=[1.0, 0.5]).thresholds == [0.5, 1.0]
    assert definition().thresholds == [0.5, 0.8, 1.0]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"thresholds": [0.5, 1.5]}, "threshold 1.5 is not in (0, 1]"),
        ({"thresholds": [0.0]}, "threshold 0.0 is not in (0, 1]"),
        ({"thresholds": [0.5, 0.5]}, "repeat a value"),
        ({"limit_usd": Decimal("-1")}, "limit_usd"),
        ({"limit_usd": Decimal("0")}, "greater than 0"),
        ({"scope": {"galaxy": "x"}}, "scope.galaxy"),
        ({"scope": {"team": ""}}, "scope.team"),
        ({"name": "no spaces"}, "name"),
        ({"name": "x" * 101}, "at most 100"),
        ({"window": "hourly"}, "window"),
        ({"mode": "strict"}, "mode"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_an_invalid_definition_is_a_clear_error(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        definition(**fields)
    assert says in str(invalid.value)


def test_the_status_reports_the_current_window() -> None:
    team = budget()
    team.reserve("r-1", usd("5"), NOW, LEASE)
    team.reserve("r-2", usd("1"), NOW, LEASE)
    team.settle("r-1", usd("2.5"), NOW)

    assert team.status(NOW) == {
        "name": "team-a",
        "scope": {"team": "a"},
        "window": "daily",
        "window_start": datetime(2025, 3, 12, tzinfo=UTC),
        "spent_usd": usd("2.5"),
        "reserved_usd": usd("1"),
        "limit_usd": usd("10"),
        "percent": 25.0,
        "mode": "hard",
    }
    tomorrow = team.status(NOW + timedelta(days=1))
    assert tomorrow["spent_usd"] == 0 and tomorrow["percent"] == 0.0
    assert tomorrow["window_start"] == datetime(2025, 3, 13, tzinfo=UTC)
    assert team.spent_usd == usd("2.5")


def state(budget: Budget) -> dict[str, Any]:
    # the lease heap is an index: entries of closed reservations are dropped lazily
    skipped = {"_modified_on", "_pending_events", "_leases"}
    return {k: v for k, v in vars(budget).items() if k not in skipped} | {
        "next_expiry": budget.next_expiry
    }


def test_a_budget_replays_from_its_stored_events_to_the_same_state() -> None:
    app: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    team = Budget.define(definition(timezone="Europe/Berlin", window="weekly"), NOW)
    team.reserve("r-1", usd("6"), NOW, LEASE)
    team.reserve("r-2", usd("3"), NOW, timedelta(days=30))
    team.reserve("r-3", usd("1"), NOW, LEASE)
    with pytest.raises(BudgetExceededError):
        team.reserve("r-4", usd("1"), NOW, LEASE)
    team.settle("r-1", usd("5.5"), NOW)
    team.expire_leases(NOW + LEASE)
    team.redefine(definition(timezone="Europe/Berlin", window="weekly", mode="soft"), NOW)
    team.reserve("r-5", usd("2"), NOW + timedelta(days=7), LEASE)
    app.save(team)

    replayed: Budget = app.repository.get(Budget.create_id("team-a"))

    assert state(replayed) == state(team)
    assert replayed.reservations["r-2"].amount_usd == usd("3")
    assert replayed.lease_expired == set() and replayed.fired == set()
    assert replayed.window_start == datetime(2025, 3, 16, 23, tzinfo=UTC)
