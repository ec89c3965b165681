"""The budgets of the usage store: admission, settlement and definitions, saved as events."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from llmbus.services.usage.budget import Budget, BudgetExceededError, Cover
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import (
    COST_QUANTUM,
    BudgetAdmission,
    BudgetDefinition,
    BudgetRemaining,
    BudgetReservation,
)

Clock = Callable[[], datetime]
ATTEMPTS = 5  # a version conflict means another usage service wrote first: reload and retry


def utc_now() -> datetime:
    return datetime.now(UTC)


def request_attributes(usage: UsageRecorded) -> dict[str, str | None]:
    return {"user": usage.user_id, "team": usage.team_id, "project": usage.project_id,
            "model": usage.model, "role": usage.role}  # fmt: skip


@dataclass
class Waiting:
    """A reservation to admit, or to hold while it may still wait for open ones to settle."""

    reservation: BudgetReservation
    may_wait: bool = False
    deadline: float = 0.0  # the caller's, on its own (monotonic) clock


@dataclass
class Batch:
    """Budget commands applied together and saved in one transaction: settlements first (they
    free room), then lease expiry, then the reservations that waited, then new ones."""

    settlements: list[UsageRecorded] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    expire: bool = False


@dataclass
class BatchResult:
    answered: list[tuple[Waiting, BudgetAdmission]] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return sum(not admission.admitted for _, admission in self.answered)


class BudgetBook:
    """Every budget of the store in memory. Callers run its methods on one thread."""

    def __init__(self, app: Any, clock: Clock = utc_now) -> None:
        self.app = app
        self.clock = clock
        self.budgets: dict[str, Budget] = {}

    def load(self, configured: Iterable[BudgetDefinition]) -> None:
        defined_topic = get_topic(getattr(Budget, "Defined"))  # noqa: B009 (made by @event)
        defined = self.app.recorder.select_notifications(
            0, 1_000_000, topics=[defined_topic], inclusive_of_start=False
        )
        for notification in defined:
            budget_id = notification.originator_id
            budget: Budget = self.app.repository.get(budget_id)
            self.budgets[budget.name] = budget
        for definition in configured:
            self.define(definition)

    def define(self, definition: BudgetDefinition) -> Budget:
        for _ in range(ATTEMPTS):
            budget = self.budgets.get(definition.name)
            if budget is None:
                budget = Budget.define(definition, self.clock())
            elif budget.definition == definition:
                return budget
            else:
                budget.redefine(definition, self.clock())
            if self._saved(budget):
                self.budgets[budget.name] = budget
                return budget
        raise RuntimeError(f"budget {definition.name!r} kept changing under us; try again")

    def apply(self, batch: Batch) -> BatchResult:
        """Apply a batch in memory and save every budget it touched in one transaction. A
        version conflict (another usage service wrote first) reloads them and redoes it all."""
        for _ in range(ATTEMPTS):
            result, touched = self._apply(batch)
            if self._saved(*touched):
                return result
        raise RuntimeError("budgets kept changing under us; try again")

    def _apply(self, batch: Batch) -> tuple[BatchResult, list[Budget]]:
        touched: dict[int, Budget] = {}  # aggregates don't hash
        result = BatchResult()
        for usage in batch.settlements:
            touched.update((id(b), b) for b in self.settle(usage))
        if batch.expire:
            result.expired = self._expire(touched)
        now = self.clock()
        for waiting in batch.waiting:
            matching = self.matching(waiting.reservation.attributes())
            touched.update((id(b), b) for b in matching)
            if waiting.may_wait and self._must_wait(waiting.reservation, matching, now):
                result.waiting.append(waiting)
            else:
                result.answered.append((waiting, self._reserve(waiting.reservation, matching)))
        return result, list(touched.values())

    def _must_wait(
        self, reservation: BudgetReservation, matching: list[Budget], now: datetime
    ) -> bool:
        """Wait when open reservations are all that stand in the way: most of each is released
        when its call settles, so refusing now would turn away requests that fit."""
        covers = {b.cover(reservation.request_id, reservation.amount_usd, now) for b in matching}
        return Cover.LATER in covers and Cover.NEVER not in covers

    def _reserve(self, reservation: BudgetReservation, matching: list[Budget]) -> BudgetAdmission:
        now = self.clock()
        lease = timedelta(seconds=reservation.lease_s)
        for position, budget in enumerate(matching):
            try:
                budget.reserve(reservation.request_id, reservation.amount_usd, now, lease)
            except BudgetExceededError as refusal:
                for reserved in matching[:position]:
                    reserved.release(reservation.request_id, f"refused by {budget.name}", now)
                return BudgetAdmission(
                    admitted=False,
                    refused_by=budget.name,
                    message=str(refusal),
                    remaining=remaining(matching),
                )
        return BudgetAdmission(admitted=True, remaining=remaining(matching))

    def settle(self, usage: UsageRecorded) -> list[Budget]:
        """Settle a provider call's reservations in memory; the caller saves what it returns,
        in the same transaction as the call itself."""
        now = self.clock()
        cost = settled_cost(usage.cost_usd)
        touched = []
        for budget in self.budgets.values():
            if usage.request_id in budget.reservations:
                budget.settle(usage.request_id, cost, now)
                touched.append(budget)
            elif usage.request_id in budget.lease_expired:
                budget.settle(usage.request_id, cost, now)  # paid after its lease: still spent
                touched.append(budget)
        return touched

    def _expire(self, touched: dict[int, Budget]) -> list[str]:
        now = self.clock()
        expired = []
        for budget in self.budgets.values():
            soonest = budget.next_expiry
            if soonest is not None and soonest <= now:
                touched[id(budget)] = budget
                expired += budget.expire_leases(now)
        return expired

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [self.budgets[name].status(now) for name in sorted(self.budgets)]

    def matching(self, attributes: dict[str, str | None]) -> list[Budget]:
        return [
            budget
            for budget in self.budgets.values()
            if all(attributes.get(key) == value for key, value in budget.scope.items())
        ]

    def reload(self, budgets: Iterable[Budget]) -> None:
        """Forget unsaved changes: read each budget back from the store."""
        for budget in budgets:
            try:
                self.budgets[budget.name] = self.app.repository.get(budget.id)
            except AggregateNotFoundError:
                self.budgets.pop(budget.name, None)

    def _saved(self, *budgets: Budget) -> bool:
        if not budgets:
            return True
        try:
            self.app.save(*budgets)
        except IntegrityError:
            self.reload(budgets)
            return False
        return True


def settled_cost(cost_usd: float) -> Decimal:
    """litellm's float costs carry noise (5.1500000000000005e-05 for 0.0000515): settle on the
    same 1e-10 grid that reservations are made on, or exact fits would overshoot by 1e-19."""
    return Decimal(str(cost_usd)).quantize(COST_QUANTUM)


def remaining(budgets: Iterable[Budget]) -> list[BudgetRemaining]:
    return [
        BudgetRemaining(
            budget=b.name,
            mode=b.mode,
            remaining_usd=float(b.remaining_usd),
            limit_usd=float(b.limit_usd),
        )
        for b in budgets
    ]
