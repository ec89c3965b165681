"""llmbus.usage.rows: the usage rows themselves, one per UsageRecorded, a page at a time, for
exports (`llmbus usage export`). Pages are keyset-paged on the projection's position, so each
is cheap at any depth, and each reply fits the NATS server's max_payload."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from llmbus.shared.contracts.base import Contract, RequestId, TimezoneName
from llmbus.shared.usage_groups import FILTER_FIELDS, GroupField

# the keys of each row, in the order an export writes them (occurred_at is UTC)
USAGE_ROW_COLUMNS = (
    "usage_id", "request_id", "provider", "model", "user_id", "team_id", "project_id",
    "conversation_id", "workflow_id", "role", "prompt_key", "prompt_version", "status",
    "error_type", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens",
    "cost_usd", "original_cost_usd", "price_version", "latency_ms", "ttft_ms", "occurred_at",
    "tags",
)  # fmt: skip
MAX_PAGE_ROWS = 10_000


class UsageRowsQuery(Contract):
    """The request on llmbus.usage.rows: one page of the rows in a range that match filters.
    Ask first with `after` 0 and no `through`; then pass the reply's `next_after` and
    `through` back, until `next_after` is null. With `order` desc the newest rows come first,
    and the cursor goes down: `after` then means before that position."""

    since: datetime | None = Field(default=None, description="Inclusive lower bound on time.")
    until: datetime | None = Field(default=None, description="Exclusive upper bound on time.")
    filters: dict[GroupField, str] = Field(
        default_factory=dict,
        description="Equality on any dimension but the time buckets; tag: the row has it.",
    )
    timezone: TimezoneName = Field(default="UTC", description="IANA timezone of naive since/until.")
    request_id: RequestId | None = Field(
        default=None, description="Only this request's rows (one per provider call)."
    )
    order: Literal["asc", "desc"] = Field(
        default="asc",
        description="asc: oldest first, as stored; desc: newest first (the latest requests).",
    )
    after: int = Field(
        default=0,
        ge=0,
        description="The cursor: rows after this position (desc: before it; 0: from the newest).",
    )
    through: int | None = Field(
        default=None,
        ge=0,
        description="Rows up to this position: the first reply's `through`, so that every page "
        "reads the same snapshot; null on the first page.",
    )
    limit: int = Field(
        default=2000,
        ge=1,
        le=MAX_PAGE_ROWS,
        description="At most this many rows; fewer when they would not fit max_payload.",
    )

    @field_validator("filters")
    @classmethod
    def _filter_fields(cls, filters: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(filters) - set(FILTER_FIELDS))
        if unknown:
            raise ValueError(
                f"cannot filter on {', '.join(unknown)}: filters take "
                f"{', '.join(FILTER_FIELDS)}; use since/until for time"
            )
        return filters


class UsageRows(Contract):
    """A page of usage rows, in position order (the order events were stored), or its reverse
    for a query in desc order."""

    rows: list[dict[str, Any]] = Field(
        description="Each row's USAGE_ROW_COLUMNS: ids, tokens, cost_usd and original_cost_usd "
        "(USD), price_version, latency_ms, ttft_ms, occurred_at (UTC), tags."
    )
    next_after: int | None = Field(
        description="The `after` of the next page; null when this page is the last."
    )
    total: int | None = Field(
        default=None, description="On the first page only: how many rows all pages hold."
    )
    through: int = Field(description="The snapshot's position: pass it back with next_after.")
