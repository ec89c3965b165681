"""client.budgets: llmbus.budget.*, answered by the usage service, and the budget events."""

from collections.abc import AsyncIterator
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from llmbus.client._transport import SubClient
from llmbus.shared import subjects
from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    BudgetExceeded,
    BudgetRemaining,
    BudgetRemainingList,
    BudgetStatus,
    BudgetStatusList,
    BudgetThresholdReached,
    RequestAttributes,
)

BudgetEvent = BudgetThresholdReached | BudgetExceeded


class Budgets(SubClient):
    service = "usage"

    async def status(self, timeout_s: float = 10.0) -> list[BudgetStatus]:
        """Spent, reserved and limit of every budget in its current window."""
        rows = await self._call(subjects.BUDGET_STATUS, {}, BudgetStatusList, timeout_s)
        return rows.root

    async def remaining(
        self,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        project_id: str | None = None,
        model: str | None = None,
        role: str | None = None,
        timeout_s: float = 10.0,
    ) -> list[BudgetRemaining]:
        """What is left (limit - spent - reserved) in each budget a request with these ids,
        model and role would be admitted against: for routing to a model that can still pay."""
        query = RequestAttributes(user=user_id, team=team_id, project=project_id, model=model,
                                  role=role)  # fmt: skip
        answer = await self._call(subjects.BUDGET_REMAINING, query, BudgetRemainingList, timeout_s)
        return answer.budgets

    async def events(
        self,
        budget: str | None = None,
        scope: dict[str, str] | None = None,
        replay: bool = False,
    ) -> AsyncIterator[BudgetEvent]:
        """Budget events as they happen, optionally only one budget's or one scope's.

        replay: start from the oldest event JetStream still keeps, not from now.
        """
        async for _, event in self.sequenced_events(budget, scope, replay=replay):
            yield event

    async def sequenced_events(
        self,
        budget: str | None = None,
        scope: dict[str, str] | None = None,
        *,
        replay: bool = False,
        start_sequence: int | None = None,
    ) -> AsyncIterator[tuple[int, BudgetEvent]]:
        """events(), each with its stream sequence: pass the last one seen + 1 as
        start_sequence to resume on a new connection without a gap."""
        if start_sequence is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_sequence
            )
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW
            )
        sub = await self._client.nc.jetstream().subscribe(
            "llmbus.budget.*", stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config
        )
        try:
            async for msg in sub.messages:
                event = read_event(msg.subject, msg.data)
                if budget is not None and event.budget != budget:
                    continue
                if scope is not None and any(event.scope.get(k) != v for k, v in scope.items()):
                    continue
                yield msg.metadata.sequence.stream, event
        finally:
            await sub.unsubscribe()

    # last: below this line `set` would name the method, not the builtin
    async def set(
        self, definition: BudgetDefinition | dict[str, Any], timeout_s: float = 10.0
    ) -> BudgetStatus:
        """Create or change a budget at run time; the change is stored as an event."""
        budget = BudgetDefinition.model_validate(definition)
        return await self._call(subjects.BUDGET_SET, budget, BudgetStatus, timeout_s)


def read_event(subject: str, data: bytes) -> BudgetEvent:
    if subject == subjects.BUDGET_EXCEEDED:
        return BudgetExceeded.model_validate_json(data)
    return BudgetThresholdReached.model_validate_json(data)
