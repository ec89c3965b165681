"""The Budget aggregate: one per budget, so concurrent reservations conflict on its version.

A request reserves its worst-case cost before the model call and settles the true cost after;
a hard budget refuses a reservation it cannot cover. Time is always passed in.

Window rollover: spend and fired thresholds reset, open reservations carry over into the new
window (their calls are still in flight), and settle their cost there.

A grant is a reservation held by a worker for many requests, which it admits on its own while
their worst cases fit. Their true costs settle against it one by one (spent goes up, what it
holds goes down by as much); when the worker returns it, the part it did not use is released,
and what its last calls will still cost stays held until they settle.

Fail closed: a returned grant's calls were made, and the worker said what they cost. If their
settlements have not arrived when its lease runs out (settlement lags: an outbox stopped, a
consumer is down), what it still holds is counted as spent (AssumedSpent) instead of released;
the settlements that arrive later count only past that amount. While a grant's calls stay
unsettled, no budget they count against gives new grants (see `settlement_lags`).
"""

from datetime import datetime, timedelta
from decimal import Decimal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from llmbus.services.usage.domain.budget_state import (
    BudgetState,
    Cover,
    check_same_name,
    terms_of,
)
from llmbus.services.usage.domain.errors import BudgetExceededError
from llmbus.services.usage.domain.holdings import Holdings, check_not_negative, check_positive_lease
from llmbus.services.usage.domain.window import window_start
from llmbus.shared.contracts.budget import BudgetDefinition, Mode, ScopeKey, Window

BUDGET_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:budget")
# Stored events carry these topics: they name the module the Budget was first defined in. The
# class has moved since; its topics stay, so that stores written before load, and queries by
# topic (the outbox, BudgetBook.load) find every event, old or new.
BUDGET_TOPIC = "llmbus.services.usage.budget:Budget"


def _topic(event_name: str) -> str:
    return f"{BUDGET_TOPIC}.{event_name}"


class Budget(BudgetState, Aggregate):
    TOPIC = BUDGET_TOPIC

    # The events other code reads (by topic, or field by field), declared with their fields.

    class Created(Aggregate.Created):
        TOPIC = _topic("Created")  # never stored (Defined creates a budget); named all the same

    class Defined(Aggregate.Created):
        TOPIC = _topic("Defined")
        name: str
        scope: dict[ScopeKey, str]
        window: Window
        limit_usd: Decimal
        mode: Mode
        thresholds: list[float]
        timezone: str
        window_start: datetime

    class Exceeded(Aggregate.Event):
        """A hard budget refused a reservation; published as it is stored, so it names it."""

        TOPIC = _topic("Exceeded")
        request_id: str
        requested_usd: Decimal
        spent_usd: Decimal
        reserved_usd: Decimal
        limit_usd: Decimal
        name: str
        scope: dict[str, str]
        mode: Mode
        window_start: datetime

    class ThresholdReached(Aggregate.Event):
        """Spend crossed a threshold this window; published as it is stored."""

        TOPIC = _topic("ThresholdReached")
        threshold: float
        spent_usd: Decimal
        limit_usd: Decimal
        window_start: datetime
        request_id: str | None
        name: str
        scope: dict[str, str]
        mode: Mode

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(BUDGET_NAMESPACE, name)

    @classmethod
    def define(cls, definition: BudgetDefinition, now: datetime) -> "Budget":
        start = window_start(definition.window, definition.timezone, now)
        return cls(name=definition.name, window_start=start, **terms_of(definition))

    @event(Defined)
    def __init__(
        self,
        name: str,
        scope: dict[ScopeKey, str],
        window: Window,
        limit_usd: Decimal,
        mode: Mode,
        thresholds: list[float],
        timezone: str,
        window_start: datetime,
    ) -> None:
        # the state is declared, field by field, in BudgetState
        self.name = name
        self._set_terms(scope, window, limit_usd, mode, thresholds, timezone)
        self.window_start = window_start
        self.spent_usd = Decimal(0)
        self.holdings = Holdings()
        self.fired = set()
        self.lease_expired = set()
        self.returned = set()
        self.closed_grants = set()
        self.assumed = {}
        self.owed_since = {}

    def cover(self, request_id: str, amount_usd: Decimal, now: datetime) -> Cover:
        """A query: rolls the window over and releases expired leases, records nothing else."""
        self._roll_over_to(now)
        self.expire_leases(now)
        if self.mode == "soft" or request_id in self.reservations:
            return Cover.NOW
        if self.spent_usd + self.reserved_usd + amount_usd <= self.limit_usd:
            return Cover.NOW
        # settlements only ever release part of a reservation: what is spent stays spent
        return Cover.LATER if self.spent_usd + amount_usd <= self.limit_usd else Cover.NEVER

    # Commands: each brings the window up to `now` first.

    def reserve(
        self, request_id: str, amount_usd: Decimal, now: datetime, lease: timedelta
    ) -> None:
        check_not_negative(amount_usd)
        check_positive_lease(lease)
        self._roll_over_to(now)
        self.expire_leases(now)
        if request_id in self.reservations:
            return
        if self.mode == "hard" and self.spent_usd + self.reserved_usd + amount_usd > self.limit_usd:
            spent, reserved, limit = self.spent_usd, self.reserved_usd, self.limit_usd
            self._exceed(request_id, amount_usd, spent, reserved, limit, **self._published())
            raise BudgetExceededError(self.name, spent, reserved, limit, amount_usd)
        self._reserve(request_id, amount_usd, now + lease)

    def settle(self, request_id: str, cost_usd: Decimal, now: datetime) -> None:
        check_not_negative(cost_usd)
        self._roll_over_to(now)
        if request_id in self.reservations or request_id in self.lease_expired:
            self._settle(request_id, cost_usd)
            self._fire_crossed_thresholds(request_id)

    def grant(
        self, grant_id: str, amount_usd: Decimal, now: datetime, lease: timedelta, holder: str
    ) -> None:
        """Hold `amount_usd` for a worker. The caller checked that it fits (see `room_usd`):
        a grant is sized from the room left, never refused by the budget itself."""
        check_not_negative(amount_usd)
        check_positive_lease(lease)
        self._roll_over_to(now)
        self.expire_leases(now)
        if grant_id not in self.reservations:
            self._grant(grant_id, amount_usd, now + lease, holder)

    def room_usd(self, now: datetime) -> Decimal:
        """What a new reservation or grant may take now (after rollover and expired leases)."""
        self._roll_over_to(now)
        self.expire_leases(now)
        return max(self.remaining_usd, Decimal(0))

    def settle_granted(
        self, grant_id: str, request_id: str, cost_usd: Decimal, now: datetime
    ) -> None:
        """A call admitted under a grant: counted once, by the caller (UsageRecorded dedupe)."""
        check_not_negative(cost_usd)
        self._roll_over_to(now)
        if self.knows_grant(grant_id):
            self._settle_granted(grant_id, request_id, cost_usd)
            self._fire_crossed_thresholds(request_id)

    def return_grant(self, grant_id: str, unused_usd: Decimal, now: datetime) -> None:
        check_not_negative(unused_usd)
        self._roll_over_to(now)
        if grant_id in self.reservations and grant_id not in self.returned:
            self._return_grant(grant_id, unused_usd)
            if grant_id in self.returned:
                self.owed_since[grant_id] = now

    def release(self, request_id: str, reason: str, now: datetime) -> None:
        self._roll_over_to(now)
        if request_id in self.reservations:
            self._release(request_id, reason)

    def expire_leases(self, now: datetime) -> list[str]:
        self._roll_over_to(now)
        expired = self.holdings.due(now)
        for request_id in expired:
            if request_id in self.returned:
                self._assume_spent(request_id)  # its calls were made: fail closed
            else:
                self._release(request_id, "lease_expired")
        return expired

    def redefine(self, definition: BudgetDefinition, now: datetime) -> None:
        check_same_name(self.name, definition.name)
        self._roll_over_to(now)
        start = window_start(definition.window, definition.timezone, now)
        self._redefine(window_start=start, **terms_of(definition))
        self._fire_crossed_thresholds(None)

    # Events

    @event("Redefined", topic=_topic("Redefined"))
    def _redefine(
        self,
        scope: dict[ScopeKey, str],
        window: Window,
        limit_usd: Decimal,
        mode: Mode,
        thresholds: list[float],
        timezone: str,
        window_start: datetime,
    ) -> None:
        # Spend carries over as is: the aggregate cannot split it by the new window's bounds.
        self._set_terms(scope, window, limit_usd, mode, thresholds, timezone)
        self.window_start = window_start

    @event("WindowRolledOver", topic=_topic("WindowRolledOver"))
    def _roll_over(self, window_start: datetime) -> None:
        self.window_start = window_start
        self.spent_usd = Decimal(0)
        self.fired = set()
        self.lease_expired = set()
        self.closed_grants = set()
        self.assumed = {}

    @event("Reserved", topic=_topic("Reserved"))
    def _reserve(self, request_id: str, amount_usd: Decimal, expires_at: datetime) -> None:
        self.holdings.hold(request_id, amount_usd, expires_at)

    @event(Exceeded)
    def _exceed(
        self,
        request_id: str,
        requested_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        limit_usd: Decimal,
        name: str,
        scope: dict[str, str],
        mode: Mode,
        window_start: datetime,
    ) -> None:
        pass

    @event("Settled", topic=_topic("Settled"))
    def _settle(self, request_id: str, cost_usd: Decimal) -> None:
        if request_id in self.holdings:
            self.holdings.close(request_id)
        self.lease_expired.discard(request_id)
        self.spent_usd += cost_usd

    @event("Released", topic=_topic("Released"))
    def _release(self, request_id: str, reason: str) -> None:
        self.holdings.close(request_id)
        self.returned.discard(request_id)
        if reason == "lease_expired":
            self.lease_expired.add(request_id)

    @event("Granted", topic=_topic("Granted"))
    def _grant(self, grant_id: str, amount_usd: Decimal, expires_at: datetime, holder: str) -> None:
        self.holdings.hold(grant_id, amount_usd, expires_at)

    @event("AssumedSpent", topic=_topic("AssumedSpent"))
    def _assume_spent(self, grant_id: str) -> None:
        owed = self.holdings.close(grant_id)
        self.spent_usd += owed
        self.assumed[grant_id] = owed
        self._close_grant(grant_id)

    @event("SettledUnderGrant", topic=_topic("SettledUnderGrant"))
    def _settle_granted(self, grant_id: str, request_id: str, cost_usd: Decimal) -> None:
        counted = min(cost_usd, self.assumed.get(grant_id, Decimal(0)))
        if counted:
            self.assumed[grant_id] -= counted  # counted as spent when its lease ran out
        self.spent_usd += cost_usd - counted
        if grant_id in self.holdings:
            self._hold_less(grant_id, cost_usd)

    @event("GrantReturned", topic=_topic("GrantReturned"))
    def _return_grant(self, grant_id: str, unused_usd: Decimal) -> None:
        self.returned.add(grant_id)
        self._hold_less(grant_id, unused_usd)

    def _hold_less(self, grant_id: str, amount_usd: Decimal) -> None:
        still_held = self.holdings.hold_less(grant_id, amount_usd)
        if still_held == 0 and grant_id in self.returned:
            self.holdings.close(grant_id)  # returned and every call it admitted settled
            self._close_grant(grant_id)

    def _close_grant(self, grant_id: str) -> None:
        self.returned.discard(grant_id)
        self.owed_since.pop(grant_id, None)
        self.closed_grants.add(grant_id)

    @event(ThresholdReached)
    def _reach_threshold(
        self,
        threshold: float,
        spent_usd: Decimal,
        limit_usd: Decimal,
        window_start: datetime,
        request_id: str | None,
        name: str,
        scope: dict[str, str],
        mode: Mode,
    ) -> None:
        self.fired.add(threshold)

    def _roll_over_to(self, now: datetime) -> None:
        # A clock behind the current window (another replica's skew) never rolls back.
        start = self._window_at(now)
        if start > self.window_start:
            self._roll_over(start)

    def _fire_crossed_thresholds(self, request_id: str | None) -> None:
        for threshold in self.thresholds:
            crossed = self.spent_usd >= Decimal(str(threshold)) * self.limit_usd
            if crossed and threshold not in self.fired:
                published = self._published()
                del published["window_start"]
                self._reach_threshold(
                    threshold, self.spent_usd, self.limit_usd, self.window_start, request_id,
                    **published,
                )  # fmt: skip
