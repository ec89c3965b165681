"""client.usage: llmbus.usage.query, answered by the usage service from its DuckDB projection."""

from collections.abc import Sequence
from datetime import datetime

from llmbus.client._transport import SubClient
from llmbus.shared import subjects
from llmbus.shared.contracts import UsageQuery, UsageQueryResult


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
