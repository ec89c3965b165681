"""What the usage store's budget events become on NATS."""

import json
from collections.abc import Iterator
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from llmbus.services.usage.domain import Budget
from llmbus.shared import subjects
from llmbus.shared.contracts.budget import BudgetExceeded, BudgetThresholdReached
from llmbus.shared.outbox import Outbound

# all that route() publishes
TOPICS = [get_topic(Budget.ThresholdReached), get_topic(Budget.Exceeded)]


def route(event: DomainEventProtocol[Any]) -> Iterator[Outbound]:
    budget = event.originator_id
    if isinstance(event, Budget.ThresholdReached):
        message: Any = BudgetThresholdReached(
            budget=event.name, scope=event.scope, window_start=event.window_start,
            threshold=event.threshold, spent_usd=float(event.spent_usd),
            limit_usd=float(event.limit_usd), mode=event.mode,
            request_id=event.request_id, occurred_at=event.timestamp,
        )  # fmt: skip
        # once per budget, window and threshold, whichever store relays it
        msg_id = f"budget-threshold:{budget}:{event.window_start.isoformat()}:{event.threshold}"
        yield Outbound(subjects.BUDGET_THRESHOLD_REACHED, dumps(message), msg_id)
    elif isinstance(event, Budget.Exceeded):
        message = BudgetExceeded(
            budget=event.name, scope=event.scope, window_start=event.window_start,
            spent_usd=float(event.spent_usd), reserved_usd=float(event.reserved_usd),
            limit_usd=float(event.limit_usd), requested_usd=float(event.requested_usd),
            mode="hard", request_id=event.request_id, occurred_at=event.timestamp,
        )  # fmt: skip
        yield Outbound(
            subjects.BUDGET_EXCEEDED,
            dumps(message),
            f"budget-exceeded:{budget}:{event.request_id}",
        )


def dumps(message: Any) -> bytes:
    return json.dumps(message.model_dump(mode="json"), separators=(",", ":")).encode()
