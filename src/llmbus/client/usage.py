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
    ) -> UsageQueryResult:
        """Cost, tokens and requests, grouped `by` any of GROUP_FIELDS (none: one row of totals).
        Raises pydantic's ValidationError for a group or filter field that does not exist."""
        query = UsageQuery.model_validate(
            {"group_by": list(by), "since": since, "until": until, "filters": filters or {},
             "limit": limit}
        )  # fmt: skip
        return await self._call(subjects.USAGE_QUERY, query, UsageQueryResult, timeout_s)
