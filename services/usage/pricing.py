"""The usage service's price book and repricing on NATS: llmbus.prices.set, .list and .sync, and
llmbus.usage.reprice. A repricing is computed in DuckDB; applied, each changed call gets a
UsageRepriced event, which the projection then applies like any other event."""

import asyncio
import logging
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

from llmbus.services.usage.domain import ModelPrice, RepricedCall
from llmbus.services.usage.projection.reprice import Pricing
from llmbus.shared import subjects
from llmbus.shared.contracts.prices import (
    PriceEntry,
    PriceList,
    PriceListQuery,
    PriceQuote,
    PricesChanged,
    PriceSet,
    PriceSync,
    RepriceRequest,
    RepriceResult,
)
from llmbus.shared.errors import NotFoundError
from llmbus.shared.identity import caller, owner, require_admin
from llmbus.shared.pricing import Price
from llmbus.shared.rpc import RpcRouter

if TYPE_CHECKING:
    from llmbus.services.usage.service import UsageService

log = logging.getLogger("llmbus.usage.prices")
PAGE = 5000  # changed calls read, and recorded, at a time


class PriceHandlers:
    def __init__(self, service: "UsageService") -> None:
        self.service = service

    async def set(self, request: PriceSet) -> PriceEntry:
        """A model's new price, from now on (admin); workers charge it from their next call."""
        require_admin(caller(), "setting a price")
        service = self.service
        book = service.prices
        model = await service.on_store(
            book.set, request.model, request.price.price(), owner(caller()) or "operator",
            request.reason,
        )  # fmt: skip
        log.info("price of %s set to %s: %s", request.model, model.current, request.reason)
        changed = PricesChanged(model=request.model)
        await service.nc.publish(subjects.PRICES_CHANGED, changed.model_dump_json().encode())
        return entries(model)[-1]

    async def list(self, query: PriceListQuery) -> PriceList:
        """Every model's current price, or one model's every version."""
        models = self.service.prices.models
        if query.model is None:
            return PriceList(prices=[entries(m)[-1] for m in models.values() if m.history])
        found = models.get(query.model)
        if found is None or not found.history:
            raise NotFoundError(f"no price is recorded for {query.model!r}")
        return PriceList(prices=entries(found) if query.history else entries(found)[-1:])

    async def sync(self, catalog: PriceSync) -> PriceList:
        """A worker's catalog at its start: the changes are recorded; every current price back."""
        prices = {name: quote.price() for name, quote in catalog.prices.items()}
        models = await self.service.on_store(self.service.prices.sync, prices)
        return PriceList(prices=[entries(m)[-1] for m in models if m.history])

    async def reprice(self, request: RepriceRequest) -> RepriceResult:
        """What usage would cost at other prices; with apply, a UsageRepriced per changed call."""
        require_admin(caller(), "repricing usage")
        service = self.service
        pricing = self._pricing(request)
        await service.catch_up()
        projection = service.projection
        assert projection is not None
        through = projection.position
        # the summary and the calls recorded read one snapshot: what was projected by now
        rows = await service.on_duck(projection.reprice_summary, request, pricing, through)
        repricing_id, changed = None, sum(row.changed for row in rows)
        if request.apply and changed:
            repricing_id = str(uuid.uuid4())
            await self._record(request, pricing, through, repricing_id)
            await service.catch_up()
        cost = sum((r.cost_usd for r in rows), Decimal(0))
        new = sum((r.new_cost_usd for r in rows), Decimal(0))
        return RepriceResult(
            rows=rows, calls=sum(r.calls for r in rows), cost_usd=cost, new_cost_usd=new,
            difference_usd=new - cost, changed=changed, applied=repricing_id is not None,
            repricing_id=repricing_id, versions=self._versions(request, pricing),
        )  # fmt: skip

    def _pricing(self, request: RepriceRequest) -> Pricing:
        if request.prices is not None:
            return Pricing(by_model={m: q.price() for m, q in request.prices.items()})
        assert request.model is not None
        price = self.service.prices.current(request.model)
        if price is None:
            raise NotFoundError(
                f"no price is recorded for {request.model!r}: name a model a worker has priced, "
                "set one with `llmbus prices set`, or reprice with --prices FILE"
            )
        return Pricing(every=price)

    def _versions(self, request: RepriceRequest, pricing: Pricing) -> dict[str, str]:
        if pricing.every is not None:
            return {str(request.model): pricing.every.version}
        return {model: price.version for model, price in (pricing.by_model or {}).items()}

    async def _record(
        self, request: RepriceRequest, pricing: Pricing, through: int, repricing_id: str
    ) -> None:
        service = self.service
        projection = service.projection
        assert projection is not None and request.reason is not None
        by = owner(caller()) or "operator"
        after = 0
        while page := await service.on_duck(
            projection.reprice_changed, request, pricing, through, after, PAGE
        ):
            calls = [
                RepricedCall(
                    repricing_id=repricing_id, usage_id=usage_id, position=position,
                    old_cost_usd=str(old), new_cost_usd=str(new),
                    price_version=pricing.version_of(model), by=by, reason=request.reason,
                )
                for position, usage_id, model, old, new in page
            ]  # fmt: skip
            await asyncio.to_thread(service.app.record_repricing, calls)
            after = page[-1][0]
        log.info("repricing %s by %s recorded: %s", repricing_id, by, request.reason)


def entries(model: ModelPrice) -> list[PriceEntry]:
    return [
        PriceEntry(
            model=model.model, version=h["version"],
            price=PriceQuote.of(Price.from_dict(h["price"])), source=h["source"], by=h["by"],
            reason=h["reason"], effective_at=h["effective_at"],
        )
        for h in model.history
    ]  # fmt: skip


def price_routes(router: RpcRouter, handlers: PriceHandlers) -> None:
    router.answer(subjects.PRICES_SET, handlers.set)
    router.answer(subjects.PRICES_LIST, handlers.list)
    router.answer(subjects.PRICES_SYNC, handlers.sync)
    router.answer(subjects.USAGE_REPRICE, handlers.reprice)
