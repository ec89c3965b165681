"""The projection's tables: `usage`, one row per UsageRecorded, and `usage_hourly`, its sums per
hour over the low-cardinality dimensions, kept in step with every batch so that cost questions
over millions of rows read thousands (docs/analytics.md)."""

from typing import Any

from llmbus.shared.contracts import UsageRecorded

# Bumped whenever a table changes: a file of another version is dropped and rebuilt from the
# event store when it is opened (the events are the truth; the projection is a cache of them).
SCHEMA_VERSION = 3

# cost_usd is an exact DECIMAL so sums do not depend on aggregation order: a rebuild must
# give bit-identical answers. occurred_at is a TIMESTAMP holding UTC, so buckets never depend
# on the session's TimeZone setting. cost_usd is the current cost (and price_version its price),
# original_cost_usd the cost the call was recorded with. `repricing` only stages the repricings
# of a batch, within its transaction.
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    position BIGINT NOT NULL,
    usage_id VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    user_id VARCHAR,
    team_id VARCHAR,
    project_id VARCHAR,
    conversation_id VARCHAR,
    workflow_id VARCHAR,
    role VARCHAR,
    prompt_key VARCHAR,
    prompt_version INTEGER,
    status VARCHAR NOT NULL,
    error_type VARCHAR,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    cost_usd DECIMAL(18, 10) NOT NULL,
    original_cost_usd DECIMAL(18, 10) NOT NULL,
    price_version VARCHAR,
    latency_ms DOUBLE NOT NULL,
    ttft_ms DOUBLE,
    occurred_at TIMESTAMP NOT NULL,
    tags VARCHAR[] NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_hourly (
    hour TIMESTAMP NOT NULL,
    provider VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    role VARCHAR,
    team_id VARCHAR,
    project_id VARCHAR,
    prompt_key VARCHAR,
    prompt_version INTEGER,
    status VARCHAR NOT NULL,
    error_type VARCHAR,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens HUGEINT NOT NULL,
    completion_tokens HUGEINT NOT NULL,
    cached_tokens HUGEINT NOT NULL,
    total_tokens HUGEINT NOT NULL,
    cost_usd DECIMAL(38, 10) NOT NULL,
    original_cost_usd DECIMAL(38, 10) NOT NULL,
    latency_ms_sum DECIMAL(38, 3) NOT NULL,
    ttft_ms_sum DECIMAL(38, 3) NOT NULL,
    ttft_count BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS repricing (
    call_position BIGINT NOT NULL,
    cost_usd DECIMAL(18, 10) NOT NULL,
    price_version VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_state (
    name VARCHAR PRIMARY KEY,
    position BIGINT NOT NULL
);
"""
TABLES = ("usage", "usage_hourly", "repricing", "projection_state")

# The dimensions usage_hourly keeps, by their query names. Users, conversations, workflows and
# tags have too many values to roll up usefully: queries on them read `usage` (docs/analytics.md).
ROLLUP_COLUMNS = {
    "provider": "provider",
    "model": "model",
    "role": "role",
    "team": "team_id",
    "project": "project_id",
    "prompt": "prompt_key",
    "prompt_version": "prompt_version",
    "status": "status",
    "error_type": "error_type",
}

# The sums every answer is made of, as `usage` computes them; usage_hourly holds each under its
# name, and sums them again. Latencies are summed as DECIMAL: a float sum depends on its order,
# and a rebuild (in other batches) must give the same means.
PARTIALS = {
    "requests": "count(*)",
    "errors": "count(*) FILTER (WHERE status = 'error')",
    "prompt_tokens": "sum(prompt_tokens)",
    "completion_tokens": "sum(completion_tokens)",
    "cached_tokens": "sum(cached_tokens)",
    "total_tokens": "sum(total_tokens)",
    "cost_usd": "sum(cost_usd)",
    "original_cost_usd": "sum(original_cost_usd)",
    "latency_ms_sum": "sum(CAST(latency_ms AS DECIMAL(18, 3)))",
    "ttft_ms_sum": "coalesce(sum(CAST(ttft_ms AS DECIMAL(18, 3))), 0)",
    "ttft_count": "count(ttft_ms)",
}


OCCURRED_AT = 24  # row()'s index of occurred_at (every projection test fails if it is wrong)


def row(position: int, e: UsageRecorded) -> tuple[Any, ...]:
    # The appender converts an aware occurred_at to UTC and keeps a naive one as UTC.
    return (
        position, e.usage_id, e.request_id, e.provider, e.model,
        e.user_id, e.team_id, e.project_id, e.conversation_id, e.workflow_id,
        e.role, e.prompt_key, e.prompt_version, e.status, e.error_type,
        e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.total_tokens,
        e.cost_usd, e.cost_usd, e.price_version, e.latency_ms, e.ttft_ms, e.occurred_at, e.tags,
    )  # fmt: skip
