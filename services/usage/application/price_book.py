"""Every model's price history, in memory, saved as events. Callers run it on the store's thread.

A catalog price (sent by a worker at its start) is recorded when it differs from the catalog's
last one for that model; so a restart with an unchanged catalog changes nothing, and a price set
by hand stays current until it, or the catalog, changes again.
"""

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from llmbus.services.usage.domain import ModelPrice
from llmbus.shared.pricing import Price

Clock = Callable[[], datetime]


class PriceBook:
    def __init__(self, app: Any, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self.models: dict[str, ModelPrice] = {}

    def load(self) -> None:
        created = self.app.recorder.select_notifications(
            0, 1_000_000, topics=[get_topic(ModelPrice.Created)], inclusive_of_start=False
        )
        for notification in created:
            model: ModelPrice = self.app.repository.get(notification.originator_id)
            self.models[model.model] = model

    def sync(self, catalog: Mapping[str, Price]) -> list[ModelPrice]:
        """Record the catalog prices that changed; every model's price book, after."""
        changed = []
        for name, price in catalog.items():
            last = self._model(name).last_from("catalog")
            if last is None or last["version"] != price.version:
                changed.append(self._change(name, price, "catalog", None, None))
        self._save(changed)
        return list(self.models.values())

    def set(self, name: str, price: Price, by: str | None, reason: str) -> ModelPrice:
        """A price set by hand; the same price as the current one records nothing."""
        model = self._model(name)
        current = model.current
        if current is None or current["version"] != price.version or current["source"] != "manual":
            self._save([self._change(name, price, "manual", by, reason)])
        return model

    def current(self, name: str) -> Price | None:
        model = self.models.get(name)
        entry = model.current if model is not None else None
        return Price.from_dict(entry["price"]) if entry else None

    def _model(self, name: str) -> ModelPrice:
        if name not in self.models:
            self.models[name] = ModelPrice(model=name)
        return self.models[name]

    def _change(
        self, name: str, price: Price, source: str, by: str | None, reason: str | None
    ) -> ModelPrice:
        model = self._model(name)
        model.change(
            version=price.version, price=price.as_dict(), source=source, by=by, reason=reason,
            effective_at=self.clock(),
        )  # fmt: skip
        return model

    def _save(self, models: list[ModelPrice]) -> None:
        if not models:
            return
        try:
            self.app.save(*models)
        except Exception:
            for model in models:  # the pending events are gone: read back what was saved
                self._reload(model.model)
            raise

    def _reload(self, name: str) -> None:
        try:
            self.models[name] = self.app.repository.get(ModelPrice.create_id(name))
        except Exception:
            self.models.pop(name, None)
