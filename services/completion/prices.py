"""This worker's prices, kept in step with the usage service's price book: at start it sends its
catalog's prices (the usage service records those that changed) and charges what the book says
is current; when a price is set (llmbus.prices.changed) it asks again. Until the usage service
answers, the catalog's prices hold, and each UsageRecorded names the version it was priced at.
"""

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.shared import subjects
from llmbus.shared.catalog import ModelCatalog, UnknownModelError
from llmbus.shared.contracts.prices import PriceList, PriceQuote, PriceSync

log = logging.getLogger("llmbus.completion.prices")
RETRY_S = 2.0
ASK_TIMEOUT_S = 2.0


class PriceFollower:
    def __init__(self, nc: NatsClient, catalog: ModelCatalog) -> None:
        self.nc = nc
        self.catalog = catalog
        self.asked = asyncio.Event()  # a price changed: sync again
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.nc.subscribe(subjects.PRICES_CHANGED, cb=self._changed)
        self.asked.set()
        self.task = asyncio.create_task(self._follow(), name="price-sync")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _changed(self, _: Msg) -> None:
        self.asked.set()

    async def _follow(self) -> None:
        while True:
            await self.asked.wait()
            self.asked.clear()
            try:
                await self.sync()
            except Exception as exc:  # the usage service is not up yet: the catalog holds
                log.debug("price sync: %s; retrying in %.0f s", exc, RETRY_S)
                self.asked.set()
                await asyncio.sleep(RETRY_S)

    async def sync(self) -> None:
        catalog = {
            name: PriceQuote.of(listed.price)
            for name in self.catalog.known_models()
            if (listed := self.catalog.list_price(name)).priced
        }
        asked = PriceSync(prices=catalog).model_dump_json().encode()
        reply = await self.nc.request(subjects.PRICES_SYNC, asked, timeout=ASK_TIMEOUT_S)
        current = PriceList.model_validate_json(reply.data)  # an ErrorReply: tried again
        for entry in current.prices:
            self._charge(entry.model, entry.price, entry.version)

    def _charge(self, model: str, quote: PriceQuote, version: str) -> None:
        try:
            listed = self.catalog.list_price(model)
        except UnknownModelError:
            return  # a model this worker cannot call
        if not listed.priced or listed.price.version != version:
            self.catalog.set_price(model, quote.price())
            log.info("charging %s at price %s from now on", model, version)
