"""The usage store's event topics stay as stores written before the domain moved know them.

A stored event names its class by topic. The Budget and ProviderCall classes moved (from
`services/usage/budget.py` and `domain.py` into the `domain/` package); their topics did not, so
that existing stores load and queries by topic (the outbox, BudgetBook.load, the projection)
still find every event, old or new.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.utils import get_topic, resolve_topic

from llmbus.services.usage.domain import Budget, ProviderCall
from llmbus.shared.contracts.budget import BudgetDefinition

BUDGET = "llmbus.services.usage.budget:Budget"
PROVIDER_CALL = "llmbus.services.usage.domain:ProviderCall"
BUDGET_EVENTS = (
    "Created Defined Redefined WindowRolledOver Reserved Exceeded Settled Released Granted "
    "AssumedSpent SettledUnderGrant GrantReturned ThresholdReached"
).split()
# every topic a usage store holds, exactly as stored before the move
STORED_TOPICS = {
    Budget: {name: f"{BUDGET}.{name}" for name in BUDGET_EVENTS},
    ProviderCall: {name: f"{PROVIDER_CALL}.{name}" for name in ["Created", "UsageRecorded"]},
}
NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def event_classes(aggregate: type) -> dict[str, type]:
    # the base Event is never stored: eventsourcing refuses to trigger it
    return {
        name: value
        for name, value in vars(aggregate).items()
        if isinstance(value, type) and issubclass(value, CanMutateAggregate) and name != "Event"
    }


def test_the_aggregates_keep_their_topics() -> None:
    assert get_topic(Budget) == BUDGET
    assert get_topic(ProviderCall) == PROVIDER_CALL


def test_every_event_keeps_its_topic_and_resolves_from_it() -> None:
    for aggregate, topics in STORED_TOPICS.items():
        classes = event_classes(aggregate)
        assert set(classes) == set(topics), f"an event of {aggregate.__name__} has no pinned topic"
        for name, topic in topics.items():
            assert get_topic(classes[name]) == topic
            assert resolve_topic(topic) is classes[name]


def test_a_stored_budget_and_call_carry_the_old_topics_and_load_from_them() -> None:
    app: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    terms: dict[str, Any] = {"name": "team-a", "scope": {"team": "a"}, "mode": "hard"}
    team = Budget.define(
        BudgetDefinition(**terms, window="daily", limit_usd=Decimal(1), thresholds=[0.5]), NOW
    )
    team.reserve("r-1", Decimal("0.75"), NOW, LEASE)
    team.settle("r-1", Decimal("0.5"), NOW)
    call = ProviderCall(usage_id="u-1", usage={"cost_usd": 0.5})
    app.save(team, call)

    stored = [n.topic for n in app.recorder.select_notifications(0, 10)]

    assert stored == [
        f"{BUDGET}.Defined", f"{BUDGET}.Reserved", f"{BUDGET}.Settled",
        f"{BUDGET}.ThresholdReached", f"{PROVIDER_CALL}.UsageRecorded",
    ]  # fmt: skip
    assert app.repository.get(team.id).spent_usd == Decimal("0.5")
    assert app.repository.get(call.id).usage == {"cost_usd": 0.5}
