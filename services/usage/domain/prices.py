"""Model prices and repricings, as events. A model's price has a history: each change is a
PriceChanged naming its version (shared/pricing.py), where it came from, who made it and why.
A repriced call is a UsageRepriced of its own, beside the call it reprices, so that the call's
original cost stays as it was recorded."""

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

PRICES_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:prices")
REPRICED_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:repriced")
SOURCES = ("catalog", "manual")


class ModelPrice(Aggregate):
    """The price history of one model name."""

    class PriceChanged(Aggregate.Event):
        version: str
        price: dict[str, str]  # shared.pricing.Price.as_dict()
        source: str  # catalog: read from a worker's catalog at its start; manual: llmbus prices set
        by: str | None
        reason: str | None
        effective_at: datetime

    @staticmethod
    def create_id(model: str) -> UUID:
        return uuid5(PRICES_NAMESPACE, model)

    @event("Created")
    def __init__(self, model: str) -> None:
        self.model = model
        self.history: list[dict[str, Any]] = []

    @event(PriceChanged)
    def change(
        self, version: str, price: dict[str, str], source: str, by: str | None,
        reason: str | None, effective_at: datetime,
    ) -> None:  # fmt: skip
        self.history.append({
            "version": version, "price": price, "source": source, "by": by, "reason": reason,
            "effective_at": effective_at,
        })  # fmt: skip

    @property
    def current(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None

    def last_from(self, source: str) -> dict[str, Any] | None:
        return next((h for h in reversed(self.history) if h["source"] == source), None)


class RepricedCall(Aggregate):
    """One call's cost changed by one repricing: who, why, the old cost and the new."""

    class UsageRepriced(Aggregate.Created):
        repricing_id: str
        usage_id: str
        position: int  # of the call's UsageRecorded in this store: the projection's row
        old_cost_usd: str
        new_cost_usd: str
        price_version: str
        by: str | None
        reason: str

    @staticmethod
    def create_id(repricing_id: str, usage_id: str) -> UUID:
        return uuid5(REPRICED_NAMESPACE, f"{repricing_id}:{usage_id}")

    @event(UsageRepriced)
    def __init__(
        self, repricing_id: str, usage_id: str, position: int, old_cost_usd: str,
        new_cost_usd: str, price_version: str, by: str | None, reason: str,
    ) -> None:  # fmt: skip
        self.repricing_id = repricing_id
        self.usage_id = usage_id
        self.position = position
        self.old_cost_usd = old_cost_usd
        self.new_cost_usd = new_cost_usd
        self.price_version = price_version
