"""client.usage: llmbus.usage.query and llmbus.usage.rows, answered by the usage service from its
DuckDB projection."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal

from llmbus.client._transport import SubClient
from llmbus.shared import subjects
from llmbus.shared.contracts import UsageQuery, UsageQueryResult, UsageRows, UsageRowsQuery
from llmbus.shared.contracts.prices import RepriceRequest, RepriceResult


class Usage(SubClient):
    service = "usage"

    async def query(
        self,
        by: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        filters: dict[str, str] | None = None,
        limit: int | None = None,
        timeout_s: float = 30.0,
        *,
        metrics: Sequence[str] | None = None,
        timezone: str = "UTC",
        order_by: str | None = None,
        ascending: bool = False,
    ) -> UsageQueryResult:
        """Usage grouped `by` any of GROUP_FIELDS (none: one row of totals), measured in
        `metrics` (default: DEFAULT_METRICS), top `limit` by `order_by`. Raises pydantic's
        ValidationError for a field, metric or timezone that does not exist."""
        fields = {
            "group_by": list(by), "since": since, "until": until, "filters": filters or {},
            "limit": limit, "timezone": timezone, "order_by": order_by, "ascending": ascending,
        }  # fmt: skip
        if metrics is not None:
            fields["metrics"] = list(metrics)
        query = UsageQuery.model_validate(fields)
        return await self.ask(query, timeout_s)

    async def ask(self, query: UsageQuery, timeout_s: float = 30.0) -> UsageQueryResult:
        """Any usage query: metrics, a timezone, an order and a top N as well (see UsageQuery)."""
        return await self._call(subjects.USAGE_QUERY, query, UsageQueryResult, timeout_s)

    async def rows(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: dict[str, str] | None = None,
        timezone: str = "UTC",
        page_rows: int = 2000,
        timeout_s: float = 30.0,
        *,
        order: Literal["asc", "desc"] = "asc",
        request_id: str | None = None,
    ) -> AsyncIterator[UsageRows]:
        """Every usage row in the range that matches `filters`, one page at a time (at most
        `page_rows` rows, fewer when they would not fit a NATS message), oldest first, or
        newest first with `order="desc"`; only one request's with `request_id`. The first
        page's `total` counts the rows of all pages. The pages are one snapshot: rows recorded
        after the first page was read are not in it. Raises pydantic's ValidationError for a
        filter field, order or timezone that does not exist."""
        query = UsageRowsQuery.model_validate(
            {"since": since, "until": until, "filters": filters or {}, "timezone": timezone,
             "limit": page_rows, "order": order, "request_id": request_id}
        )  # fmt: skip
        async for page in self.row_pages(query, timeout_s):
            yield page

    async def row_page(self, query: UsageRowsQuery, timeout_s: float = 30.0) -> UsageRows:
        """One page of any UsageRowsQuery: the one its `after` and `through` name (see rows);
        pass the reply's next_after and through back for the next."""
        return await self._call(subjects.USAGE_ROWS, query, UsageRows, timeout_s)

    async def row_pages(
        self, query: UsageRowsQuery, timeout_s: float = 30.0
    ) -> AsyncIterator[UsageRows]:
        """The pages of any UsageRowsQuery, from its `after` on (see rows)."""
        page = await self.row_page(query, timeout_s)
        while True:
            ahead = None
            if page.next_after is not None:
                # ask for the next page while the caller handles this one: the service reads
                # as the caller writes (two pages in memory at most)
                query = query.model_copy(update={"after": page.next_after, "through": page.through})
                ahead = asyncio.ensure_future(self.row_page(query, timeout_s))
            try:
                yield page
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                raise
            if ahead is None:
                return
            page = await ahead

    async def reprice(
        self,
        *,
        model: str | None = None,
        prices: dict[str, dict[str, Any]] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: dict[str, str] | None = None,
        timezone: str = "UTC",
        apply: bool = False,
        reason: str | None = None,
        timeout_s: float = 600.0,
    ) -> RepriceResult:
        """What the usage would cost on `model` (at its current price), or at `prices` ({model:
        {input_per_million, output_per_million, cached_per_million}}), by model and day. With
        `apply` (prices only, and a `reason`), the new costs are recorded (admin)."""
        request = RepriceRequest.model_validate({
            "model": model, "prices": prices, "since": since, "until": until,
            "filters": filters or {}, "timezone": timezone, "apply": apply, "reason": reason,
        })  # fmt: skip
        return await self._call(subjects.USAGE_REPRICE, request, RepriceResult, timeout_s)
