"""client.prices: the usage service's price book (llmbus.prices.*)."""

from decimal import Decimal

from llmbus.client._transport import SubClient
from llmbus.shared import subjects
from llmbus.shared.contracts.prices import PriceEntry, PriceList, PriceListQuery, PriceSet


class Prices(SubClient):
    service = "usage"

    async def set(
        self,
        model: str,
        input_per_million: Decimal | float | str,
        output_per_million: Decimal | float | str,
        *,
        reason: str,
        cached_per_million: Decimal | float | str | None = None,
        timeout_s: float = 10.0,
    ) -> PriceEntry:
        """Charge `model` at this price (USD per million tokens) from now on (admin)."""
        request = PriceSet.model_validate({
            "model": model, "reason": reason,
            "price": {"input_per_million": str(input_per_million),
                      "output_per_million": str(output_per_million),
                      "cached_per_million": None if cached_per_million is None
                      else str(cached_per_million)},
        })  # fmt: skip
        return await self._call(subjects.PRICES_SET, request, PriceEntry, timeout_s)

    async def list(
        self, model: str | None = None, history: bool = False, timeout_s: float = 10.0
    ) -> list[PriceEntry]:
        """Every model's current price; or `model`'s, with `history` every version of it."""
        query = PriceListQuery(model=model, history=history)
        return (await self._call(subjects.PRICES_LIST, query, PriceList, timeout_s)).prices
