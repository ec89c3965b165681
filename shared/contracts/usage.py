from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from llmbus.shared.contracts.base import Contract, Identity, TimezoneName, utcnow
from llmbus.shared.contracts.completion import Attempt
from llmbus.shared.usage_groups import DEFAULT_METRICS, GroupField, Metric
from llmbus.shared.usage_groups import GROUP_FIELDS as GROUP_FIELDS


class UsageRecorded(Identity):
    """Published to llmbus.usage.recorded once for every provider call, paid or failed."""

    usage_id: str = Field(description="Unique per provider call; the deduplication key.")
    request_id: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    total_tokens: int
    cost_usd: float = Field(
        ge=0, allow_inf_nan=False, description="0 for failed calls: they are not charged."
    )
    latency_ms: float = Field(ge=0, allow_inf_nan=False)
    ttft_ms: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Time to the first streamed delta; None for a call not streamed.",
    )
    price_version: str | None = Field(
        default=None,
        max_length=64,
        description="The version of the model's price cost_usd was computed at (llmbus prices).",
    )
    status: Literal["ok", "error"]
    error_type: str | None = None
    role: str | None = None
    prompt_key: str | None = Field(default=None, description="The prompt the request named.")
    prompt_version: int | None = Field(
        default=None, description="The version of that prompt the messages were rendered from."
    )
    tags: list[str] = Field(default_factory=list)
    grant_id: str | None = Field(
        default=None, description="The budget grant the call was admitted against, if any."
    )
    reservation_id: str | None = Field(
        default=None,
        description="The budget reservation of this call when it is not the request_id (a "
        "fallback model's, reserved again at its price).",
    )
    attempts: list[Attempt] = Field(
        default_factory=list, description="The models that failed before this call's."
    )
    occurred_at: datetime = Field(default_factory=utcnow)


class UsageQuery(Contract):
    """The request on llmbus.usage.query. Without group_by the answer is one row of totals."""

    group_by: list[GroupField] = Field(default_factory=list)
    metrics: list[Metric] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        min_length=1,
        description="What to measure; percentiles read every matching row, sums read rollups.",
    )
    since: datetime | None = Field(default=None, description="Inclusive lower bound on time.")
    until: datetime | None = Field(default=None, description="Exclusive upper bound on time.")
    filters: dict[GroupField, str] = Field(
        default_factory=dict,
        description="Equality on any dimension but the time buckets; tag: the request has it.",
    )
    timezone: TimezoneName = Field(
        default="UTC", description="IANA timezone of the hour, day, week and month buckets."
    )
    order_by: Metric | None = Field(
        default=None,
        description="Sort by this metric (it is measured even if not in metrics); default: "
        "time buckets first, then cost.",
    )
    ascending: bool = Field(default=False, description="With order_by: smallest first.")
    limit: int | None = Field(default=None, ge=1, le=100_000, description="Top N rows.")


class UsageQueryResult(Contract):
    columns: list[str]
    rows: list[dict[str, Any]]
    events_projected: int = Field(description="How many usage events the answer reflects.")
    generated_at: datetime = Field(default_factory=utcnow)
