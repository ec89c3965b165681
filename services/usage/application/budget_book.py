"""The budgets of the usage store: admission, settlement and definitions, saved as events."""

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from llmbus.services.usage.application.batch import Batch, BatchResult
from llmbus.services.usage.domain import Budget, BudgetExceededError, Cover
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import (
    COST_QUANTUM,
    BudgetAdmission,
    BudgetDefinition,
    BudgetGrant,
    BudgetGrantRequest,
    BudgetGrantReturn,
    BudgetRemaining,
    BudgetReservation,
    settled_cost,
)
from llmbus.shared.eventstore import retry_on_conflict
from llmbus.shared.money import usd

log = logging.getLogger("llmbus.usage.budgets")
Clock = Callable[[], datetime]
# a grant takes at most this share of the room left in each hard budget it is held in, so that
# other workers (and the requests that still reserve one by one) find room too
GRANT_SHARE = Decimal("0.25")
# a returned grant's calls normally settle within a second; past this, settlement lags and the
# budgets they count against give no grants: requests reserve one by one, settled as they end
SETTLEMENT_LAG = timedelta(seconds=15)


def utc_now() -> datetime:
    return datetime.now(UTC)


class BudgetBook:
    """Every budget of the store in memory. Callers run its methods on one thread."""

    def __init__(self, app: Any, clock: Clock = utc_now) -> None:
        self.app = app
        self.clock = clock
        self.budgets: dict[str, Budget] = {}
        self.lag_warned: datetime | None = None  # an alert, not one line per refused grant

    def load(self, configured: Iterable[BudgetDefinition]) -> None:
        defined = self.app.recorder.select_notifications(
            0, 1_000_000, topics=[get_topic(Budget.Defined)], inclusive_of_start=False
        )
        for notification in defined:
            budget_id = notification.originator_id
            budget: Budget = self.app.repository.get(budget_id)
            self.budgets[budget.name] = budget
        for definition in configured:
            self.define(definition)

    # Each command below is a read-change-save. A version conflict means another usage service
    # saved first: `_save` reloads what it touched, and retry_on_conflict runs it all again.

    def define(self, definition: BudgetDefinition) -> Budget:
        return retry_on_conflict(
            lambda: self._define(definition), f"define budget {definition.name!r}"
        )

    def _define(self, definition: BudgetDefinition) -> Budget:
        budget = self.budgets.get(definition.name)
        if budget is None:
            budget = Budget.define(definition, self.clock())
        elif budget.definition == definition:
            return budget
        else:
            budget.redefine(definition, self.clock())
        self._save(budget)
        self.budgets[budget.name] = budget
        return budget

    def apply(self, batch: Batch) -> BatchResult:
        """Apply a batch in memory and save every budget it touched in one transaction. A
        version conflict (another usage service wrote first) reloads them and redoes it all."""
        return retry_on_conflict(lambda: self._apply_and_save(batch), "apply budget commands")

    def _apply_and_save(self, batch: Batch) -> BatchResult:
        try:
            result, touched = self._apply(batch)
        except Exception:
            self.forget_unsaved()  # what was applied before the failure is not saved
            raise
        self._save(*touched)
        return result

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
                    remaining=remaining(matching, now),
                )
        return BudgetAdmission(admitted=True, remaining=remaining(matching, now))

    def grant(self, request: BudgetGrantRequest, blocked: bool = False) -> BudgetGrant:
        """Hold budget for a worker in every budget matching the request's attributes: a share
        of the room left in the hard ones, or nothing to bound if none is hard. Not granted
        when that share is below `min_usd`, or when `blocked` (reservations wait for room)."""
        return retry_on_conflict(
            lambda: self._granted(request, blocked), f"grant {request.grant_id!r}"
        )

    def _granted(self, request: BudgetGrantRequest, blocked: bool) -> BudgetGrant:
        answer, touched = self._grant(request, blocked)
        self._save(*touched)
        return answer

    def _grant(
        self, request: BudgetGrantRequest, blocked: bool
    ) -> tuple[BudgetGrant, list[Budget]]:
        now = self.clock()
        matching = self.matching(request.attributes())
        names = [b.name for b in matching]
        hard = [b for b in matching if b.mode == "hard"]
        if any(request.grant_id in b.reservations for b in matching):  # asked again
            return held_grant(request.grant_id, hard, names), []
        amount: Decimal | None = None
        if lagging := self._lagging(hard, now):
            refused = BudgetGrant(granted=False, grant_id=request.grant_id, budgets=names,
                                  message=f"settlement lags in {', '.join(lagging)}")  # fmt: skip
            return refused, []
        if hard:
            room = min(b.room_usd(now) for b in hard)  # may roll windows over: saved either way
            share = (room * GRANT_SHARE).quantize(COST_QUANTUM, rounding=ROUND_FLOOR)
            amount = min(request.want_usd, share)
            if blocked or amount < request.min_usd or amount <= 0:
                why = "requests are waiting for room" if blocked else f"{usd(room)} left"
                refused = BudgetGrant(
                    granted=False, grant_id=request.grant_id, budgets=names,
                    message=f"too little room for a grant: {why}",
                )  # fmt: skip
                return refused, hard
        lease = timedelta(seconds=request.lease_s)
        for budget in matching:
            # soft budgets hold nothing: they only need to know the grant to count its calls
            held_usd = amount if amount is not None and budget.mode == "hard" else Decimal(0)
            budget.grant(request.grant_id, held_usd, now, lease, request.holder)
        answer = BudgetGrant(
            granted=True, grant_id=request.grant_id, amount_usd=amount, budgets=names
        )
        return answer, matching

    def _lagging(self, hard: list[Budget], now: datetime) -> list[str]:
        """The budgets whose returned grants' calls have not settled for SETTLEMENT_LAG."""
        lagging = [b.name for b in hard if b.settlement_lags(now, SETTLEMENT_LAG)]
        if lagging and (self.lag_warned is None or now - self.lag_warned >= SETTLEMENT_LAG):
            self.lag_warned = now
            log.warning(
                "settlement lags in budgets %s: calls of a returned grant have not been recorded "
                "for %d s (is the completion outbox publishing, the usage consumer running?); "
                "no grants until they are", lagging, SETTLEMENT_LAG.total_seconds(),
            )  # fmt: skip
        return lagging

    def return_grant(self, returned: BudgetGrantReturn) -> list[str]:
        """Release what a returned grant did not use; the names of the budgets it was held in."""
        return retry_on_conflict(
            lambda: self._return_grant(returned), f"return grant {returned.grant_id!r}"
        )

    def _return_grant(self, returned: BudgetGrantReturn) -> list[str]:
        now = self.clock()
        touched = [b for b in self.budgets.values() if returned.grant_id in b.reservations]
        for budget in touched:
            budget.return_grant(returned.grant_id, returned.unused_usd, now)
        self._save(*touched)
        return [b.name for b in touched]

    def settle(self, usage: UsageRecorded) -> list[Budget]:
        """Settle a provider call's reservations in memory; the caller saves what it returns,
        in the same transaction as the call itself."""
        now = self.clock()
        cost = settled_cost(usage.cost_usd)
        touched = []
        if usage.grant_id is not None:
            for budget in self.budgets.values():
                if budget.knows_grant(usage.grant_id):
                    budget.settle_granted(usage.grant_id, usage.request_id, cost, now)
                    touched.append(budget)
            return touched
        reserved_as = usage.reservation_id or usage.request_id
        for budget in self.budgets.values():
            if reserved_as in budget.reservations:
                budget.settle(reserved_as, cost, now)
                touched.append(budget)
            elif reserved_as in budget.lease_expired:
                budget.settle(reserved_as, cost, now)  # paid after its lease: still spent
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

    def remaining_for(self, attributes: dict[str, str | None]) -> list[BudgetRemaining]:
        """What is left in each budget matching these attributes, in its current window."""
        return remaining(sorted(self.matching(attributes), key=lambda b: b.name), self.clock())

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [self.budgets[name].status(now) for name in sorted(self.budgets)]

    def matching(self, attributes: dict[str, str | None]) -> list[Budget]:
        return [
            budget
            for budget in self.budgets.values()
            if all(attributes.get(key) == value for key, value in budget.scope.items())
        ]

    def forget_unsaved(self) -> None:
        """After a failure part way through a change: every budget as last saved."""
        self.reload(list(self.budgets.values()))

    def reload(self, budgets: Iterable[Budget]) -> None:
        """Forget unsaved changes: read each budget back from the store."""
        for budget in budgets:
            try:
                self.budgets[budget.name] = self.app.repository.get(budget.id)
            except AggregateNotFoundError:
                self.budgets.pop(budget.name, None)

    def _save(self, *budgets: Budget) -> None:
        """Save budgets in one transaction. Losing a race to another usage service reloads
        them as it saved them, and raises IntegrityError for retry_on_conflict."""
        if not budgets:
            return
        try:
            self.app.save(*budgets)
        except IntegrityError:
            self.reload(budgets)
            raise


def held_grant(grant_id: str, hard: list[Budget], names: list[str]) -> BudgetGrant:
    """A grant asked for again: what it holds now (the least of its hard budgets), not more."""
    holding = [b.reservations[grant_id] for b in hard if grant_id in b.reservations]
    held = min((r.amount_usd for r in holding), default=None)
    return BudgetGrant(granted=True, grant_id=grant_id, amount_usd=held, budgets=names)


def remaining(budgets: Iterable[Budget], now: datetime) -> list[BudgetRemaining]:
    rows = []
    for budget in budgets:
        status = budget.status(now)  # spent counts from 0 in a window no command has begun
        left = status["limit_usd"] - status["spent_usd"] - status["reserved_usd"]
        rows.append(BudgetRemaining(budget=budget.name, mode=budget.mode,
                                    remaining_usd=float(left),
                                    limit_usd=float(budget.limit_usd)))  # fmt: skip
    return rows
