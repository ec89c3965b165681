"""The usage service's metrics (shared/metrics.py): each budget's spend and limit, how far the
DuckDB projection is behind the store, and its consumer's backlog; read every few seconds while
the service runs, never on the path of a request. Its requests in flight and its error replies
are counted by its RpcRouter (shared/rpc/metering.py)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from llmbus.services.usage.application import UsageApplication
from llmbus.services.usage.application.store import CALL_RECORDED, CALL_REPRICED
from llmbus.shared import metrics, subjects
from llmbus.shared.settings import Settings

Statuses = Callable[[], Awaitable[list[dict[str, Any]]]]


def scope_label(scope: dict[str, str]) -> str:
    """As `llmbus budgets status` shows it: team=red,user=ann, or global."""
    return ",".join(f"{key}={value}" for key, value in sorted(scope.items())) or "global"


class UsageGauges:
    def __init__(
        self, app: UsageApplication, statuses: Statuses, position: Callable[[], int | None]
    ) -> None:
        self.app = app
        self.statuses = statuses  # every budget's status, read where budgets are changed
        self.position = position  # the projection's, once it is open
        self.shown: set[tuple[str, str]] = set()

    async def budgets(self) -> None:
        shown = set()
        for status in await self.statuses():
            labels = (status["name"], scope_label(status["scope"]))
            metrics.BUDGET_SPENT(*labels).set(float(status["spent_usd"]))
            metrics.BUDGET_LIMIT(*labels).set(float(status["limit_usd"]))
            shown.add(labels)
        for gone in self.shown - shown:  # a budget renamed or rescoped: its old series goes
            metrics.BUDGET_SPENT.remove(*gone)
            metrics.BUDGET_LIMIT.remove(*gone)
        self.shown = shown

    async def projection_lag(self) -> None:
        position = self.position()
        if position is None:
            return
        behind = await asyncio.to_thread(self._stored_after, position)
        metrics.PROJECTION_LAG.set(behind)

    def _stored_after(self, position: int) -> int:
        """Usage events stored after `position`, as many as PROJECTION_LAG_CAP at most."""
        notifications = self.app.recorder.select_notifications(
            position, metrics.PROJECTION_LAG_CAP, topics=[CALL_RECORDED, CALL_REPRICED],
            inclusive_of_start=False,
        )  # fmt: skip
        return len(notifications)


def usage_metrics(settings: Settings, gauges: UsageGauges) -> metrics.MetricsExporter:
    return metrics.MetricsExporter(
        "usage", settings.usage.metrics_port, settings.usage.metrics_host,
        [(subjects.EVENTS_STREAM, subjects.USAGE_CONSUMER)],
        [("budgets", gauges.budgets), ("the projection's position", gauges.projection_lag)],
    )  # fmt: skip
