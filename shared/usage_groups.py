"""The names a usage query speaks: what it can group and filter by, and what it can measure. The
UsageQuery contract uses them; they live outside `contracts` so that `llmbus usage --help` can
list them without importing pydantic."""

from typing import Literal, get_args

GroupField = Literal[
    "model",
    "provider",
    "role",
    "user",
    "team",
    "project",
    "conversation",
    "workflow",
    "tag",
    "prompt",
    "prompt_version",
    "status",
    "error_type",
    "hour",
    "day",
    "week",
    "month",
]
GROUP_FIELDS: tuple[str, ...] = get_args(GroupField)
TIME_FIELDS = ("hour", "day", "week", "month")
# what --where takes: every dimension but the time buckets, which since/until bound
FILTER_FIELDS = tuple(field for field in GROUP_FIELDS if field not in TIME_FIELDS)

Metric = Literal[
    "requests",
    "errors",
    "error_rate",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost_usd",
    "original_cost_usd",
    "latency_ms_mean",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
    "ttft_ms_mean",
    "ttft_ms_p50",
    "ttft_ms_p95",
    "ttft_ms_p99",
]
METRICS: tuple[str, ...] = get_args(Metric)
# what a query measures when it names no metrics: everything that sums, which rollups answer
DEFAULT_METRICS: tuple[Metric, ...] = (
    "requests",
    "errors",
    "error_rate",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms_mean",
)
