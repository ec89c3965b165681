"""Model prices (llmbus.prices.*) and repricing usage (llmbus.usage.reprice)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from llmbus.shared.contracts.base import Contract, TimezoneName
from llmbus.shared.contracts.completion import ModelName
from llmbus.shared.pricing import Price
from llmbus.shared.usage_groups import GroupField

PerMillion = Annotated[Decimal, Field(ge=0, le=1_000_000, allow_inf_nan=False)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class PriceQuote(Contract):
    """A price as price lists quote it: USD per million tokens."""

    input_per_million: PerMillion
    output_per_million: PerMillion
    cached_per_million: PerMillion | None = Field(
        default=None, description="Prompt tokens read from the provider's cache (default: input)."
    )

    def price(self) -> Price:
        return Price.per_million(
            self.input_per_million, self.output_per_million, self.cached_per_million
        )

    @classmethod
    def of(cls, price: Price) -> "PriceQuote":
        per_million = [v * 1_000_000 for v in (price.input_per_token, price.output_per_token,
                                               price.cached_per_token)]  # fmt: skip
        return cls(
            input_per_million=per_million[0].normalize(),
            output_per_million=per_million[1].normalize(),
            cached_per_million=per_million[2].normalize(),
        )


class PriceSet(Contract):
    """The request on llmbus.prices.set (admin): a model's new price, from now on."""

    model: ModelName
    price: PriceQuote
    reason: Reason


class PriceEntry(Contract):
    """One version of a model's price."""

    model: str
    version: str
    price: PriceQuote
    source: Literal["catalog", "manual"]
    by: str | None = None
    reason: str | None = None
    effective_at: datetime


class PriceListQuery(Contract):
    """The request on llmbus.prices.list: every model's current price, or one model's history."""

    model: ModelName | None = None
    history: bool = Field(default=False, description="Every version of `model`'s price.")


class PriceList(Contract):
    prices: list[PriceEntry]


class PricesChanged(Contract):
    """Broadcast on llmbus.prices.changed when a price is set: workers ask for prices again."""

    model: str


class PriceSync(Contract):
    """Sent by a completion worker at its start (llmbus.prices.sync): the prices of its catalog.
    The usage service records those that changed since the catalog's last, and answers with
    every model's current price (a PriceList), which the worker charges from then on."""

    prices: dict[str, PriceQuote] = Field(max_length=10_000)


class RepriceRequest(Contract):
    """The request on llmbus.usage.reprice (admin): what usage would cost on another `model`,
    or at other `prices`; with `apply`, the new costs are recorded (`prices` only)."""

    model: ModelName | None = Field(
        default=None, description="Every call priced at this model's current price."
    )
    prices: dict[ModelName, PriceQuote] | None = Field(
        default=None, max_length=1000, description="Calls of these models priced at these."
    )
    since: datetime | None = None
    until: datetime | None = None
    filters: dict[GroupField, str] = Field(default_factory=dict)
    timezone: TimezoneName = "UTC"
    apply: bool = False
    reason: Reason | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.model is None) == (self.prices is None):
            raise ValueError("name a 'model' to price every call at, or 'prices', not both")
        if self.apply and self.prices is None:
            raise ValueError("only new 'prices' can be applied: a model's is a what-if")
        if self.apply and not self.reason:
            raise ValueError("applying a repricing needs a 'reason'")
        return self


class RepriceRow(Contract):
    model: str
    day: str
    calls: int
    changed: int = Field(description="Calls whose cost changes.")
    cost_usd: Decimal
    new_cost_usd: Decimal
    difference_usd: Decimal


class RepriceResult(Contract):
    rows: list[RepriceRow] = Field(description="By model and day, in time order.")
    calls: int
    cost_usd: Decimal
    new_cost_usd: Decimal
    difference_usd: Decimal
    changed: int = Field(description="Calls whose cost would change (with apply: changed).")
    applied: bool
    repricing_id: str | None = None
    versions: dict[str, str] = Field(description="The version of each price used, by model.")
