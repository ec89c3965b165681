"""What the report shows, asked of the usage service through the SDK (never of DuckDB)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbus.client import Client

TOP = 10  # users and teams shown
Rows = list[dict[str, Any]]

# the report's field: what the status line says, and the query's arguments
QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "totals": ("totals", {"metrics": ["requests", "errors", "error_rate", "cost_usd"]}),
    "cost_by_day": ("cost per day", {"by": ["day", "model"], "metrics": ["cost_usd"]}),
    "top_users": ("top users", {"by": ["user"], "metrics": ["cost_usd", "requests"],
                                "order_by": "cost_usd", "limit": TOP}),
    "top_teams": ("top teams", {"by": ["team"], "metrics": ["cost_usd", "requests"],
                                "order_by": "cost_usd", "limit": TOP}),
    "latency": ("latency percentiles", {"by": ["model"], "metrics": [
        "requests", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99"]}),
    "errors_by_day": ("error rate", {"by": ["day"],
                                     "metrics": ["requests", "errors", "error_rate"]}),
}  # fmt: skip


@dataclass(frozen=True)
class Report:
    """The rows behind every chart, and the period they cover (None: unbounded)."""

    since: datetime | None = None
    until: datetime | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    totals: dict[str, Any] = field(default_factory=dict)
    cost_by_day: Rows = field(default_factory=list)
    top_users: Rows = field(default_factory=list)
    top_teams: Rows = field(default_factory=list)
    latency: Rows = field(default_factory=list)
    errors_by_day: Rows = field(default_factory=list)
    budgets: Rows = field(default_factory=list)


async def collect(
    client: "Client",
    since: datetime | None = None,
    until: datetime | None = None,
    on_step: Callable[[str], None] | None = None,
    filters: dict[str, str] | None = None,
) -> Report:
    """Ask each query in turn (on_step names it first, for a status line), then the budgets.
    `filters` narrow every usage query (the console's model and team), not the budgets."""
    step = on_step or (lambda _: None)
    answers: dict[str, Rows] = {}
    for name, (what, query) in QUERIES.items():
        step(what)
        answered = await client.usage.query(since=since, until=until, filters=filters, **query)
        answers[name] = answered.rows
    step("budgets")
    budgets = [row.model_dump(mode="json") for row in await client.budgets.status()]
    totals = answers["totals"]
    return Report(
        since, until, totals=totals[0] if totals else {}, cost_by_day=answers["cost_by_day"],
        top_users=answers["top_users"], top_teams=answers["top_teams"],
        latency=answers["latency"], errors_by_day=answers["errors_by_day"], budgets=budgets,
    )  # fmt: skip
