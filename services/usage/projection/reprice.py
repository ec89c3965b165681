"""What usage would cost at other prices, computed in DuckDB from each row's tokens: the summary
by model and day, and the calls whose cost would change (those a repricing records)."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb

from llmbus.services.usage.projection.query import where_sql
from llmbus.services.usage.projection.zones import to_utc
from llmbus.shared.contracts import UsageQuery
from llmbus.shared.contracts.prices import RepriceRequest, RepriceRow
from llmbus.shared.pricing import Price

PRICE = "CAST(? AS DECIMAL(38, 20))"
# as litellm prices a reply (shared.pricing.Price.cost), rounded to the projection's grid
NEW_COST = (
    "CAST(greatest(u.prompt_tokens - u.cached_tokens, 0) * p.input "
    "+ least(u.cached_tokens, u.prompt_tokens) * p.cached "
    "+ u.completion_tokens * p.output AS DECIMAL(18, 10))"
)


@dataclass(frozen=True)
class Pricing:
    """The prices a repricing uses: one for every call (`every`), or one per model."""

    every: Price | None = None
    by_model: dict[str, Price] | None = None

    def version_of(self, model: str) -> str:
        price = self.every or (self.by_model or {})[model]
        return price.version


def summary(
    con: duckdb.DuckDBPyConnection, request: RepriceRequest, pricing: Pricing, through: int
) -> list[RepriceRow]:
    """Calls, current and new cost by model and day (in the request's timezone)."""
    params: list[Any] = [request.timezone]
    repriced = _repriced(request, pricing, through, params)
    sql = (
        "SELECT model, strftime(CAST(timezone(?, timezone('UTC', occurred_at)) AS DATE), "
        "'%Y-%m-%d') AS day, count(*), count(*) FILTER (WHERE new_cost <> cost_usd), "
        "sum(cost_usd), sum(new_cost) "
        f"FROM ({repriced}) GROUP BY ALL ORDER BY day, model"
    )
    return [
        RepriceRow(model=model, day=day, calls=calls, changed=changed, cost_usd=cost,
                   new_cost_usd=new, difference_usd=new - cost)
        for model, day, calls, changed, cost, new in con.execute(sql, params).fetchall()
    ]  # fmt: skip


def changed_after(
    con: duckdb.DuckDBPyConnection, request: RepriceRequest, pricing: Pricing, through: int,
    after: int, limit: int,
) -> list[tuple[int, str, str, Decimal, Decimal]]:  # fmt: skip
    """The next `limit` calls after position `after` whose cost would change: position,
    usage_id, model, old cost, new cost."""
    params: list[Any] = []
    repriced = _repriced(request, pricing, through, params)
    sql = (
        f"SELECT position, usage_id, model, cost_usd, new_cost FROM ({repriced}) "
        "WHERE new_cost <> cost_usd AND position > ? ORDER BY position LIMIT ?"
    )
    return [tuple(r) for r in con.execute(sql, [*params, after, limit]).fetchall()]


def _repriced(request: RepriceRequest, pricing: Pricing, through: int, params: list[Any]) -> str:
    """The usage rows the request covers, each with its new cost."""
    since, until = to_utc(request.since, request.timezone), to_utc(request.until, request.timezone)
    query = UsageQuery(filters=request.filters, timezone=request.timezone)
    where = where_sql(query, since, until, False, params)
    where += (" AND " if where else " WHERE ") + "position <= ?"
    params.append(through)
    rows = f"(SELECT * FROM usage{where}) AS u"
    if pricing.every is not None:
        prices = f"(SELECT {PRICE} AS input, {PRICE} AS output, {PRICE} AS cached) AS p"
        params.extend(_parts(pricing.every))
        joined = f"{rows}, {prices}"
    else:
        by_model = pricing.by_model or {}
        values = ", ".join(f"(?, {PRICE}, {PRICE}, {PRICE})" for _ in by_model)
        for model, price in by_model.items():
            params.extend([model, *_parts(price)])
        joined = f"{rows} JOIN (VALUES {values}) AS p(model, input, output, cached) USING (model)"
    return f"SELECT u.*, {NEW_COST} AS new_cost FROM {joined}"


def _parts(price: Price) -> list[Decimal]:
    return [price.input_per_token, price.output_per_token, price.cached_per_token]
