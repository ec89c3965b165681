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

import heapq
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, event

from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    Mode,
    ScopeKey,
    Window,
    zone,
)

BUDGET_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:budget")
LIFETIME_START = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(window: Window, timezone: str, at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"time {at} has no timezone")
    if window == "lifetime":
        return LIFETIME_START
    tz = zone(timezone)
    day = at.astimezone(tz).date()
    first = {
        "daily": day,
        "weekly": day - timedelta(days=day.weekday()),
        "monthly": day.replace(day=1),
    }
    return local_midnight(first[window], tz)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # fold=0 maps a midnight lost to DST onto the gap's start, the first instant of that day.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


class BudgetError(Exception):
    """A budget command that cannot be carried out."""


class BudgetExceededError(BudgetError):
    def __init__(
        self,
        budget: str,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        limit_usd: Decimal,
        requested_usd: Decimal,
    ) -> None:
        super().__init__(
            f"budget {budget!r} cannot cover ${requested_usd}: spent ${spent_usd}"
            f" + reserved ${reserved_usd} of limit ${limit_usd}"
        )
        self.budget = budget
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.limit_usd = limit_usd
        self.requested_usd = requested_usd


class UnknownReservationError(BudgetError):
    """No open reservation has this request id."""


class BudgetRenamedError(BudgetError):
    """A budget's name is its identity; a new name is a new budget."""


class Cover(Enum):
    """Whether a budget can take a reservation now, once its open reservations settle, or never
    in this window (what is already spent leaves too little)."""

    NOW = "now"
    LATER = "later"
    NEVER = "never"


class Reservation(NamedTuple):
    amount_usd: Decimal
    expires_at: datetime


class Budget(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(BUDGET_NAMESPACE, name)

    @classmethod
    def define(cls, definition: BudgetDefinition, now: datetime) -> "Budget":
        start = window_start(definition.window, definition.timezone, now)
        return cls(name=definition.name, window_start=start, **_terms(definition))

    @event("Defined")
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
        self.name = name
        self._set_terms(scope, window, limit_usd, mode, thresholds, timezone)
        self.window_start = window_start
        self.spent_usd = Decimal(0)
        self.reservations: dict[str, Reservation] = {}
        self._reserved = Decimal(0)  # the sum of open reservations, kept as they change
        # (expires_at, request_id) of reservations, soonest first; entries of reservations
        # settled or released since are skipped when they come up
        self._leases: list[tuple[datetime, str]] = []
        self.fired: set[float] = set()
        # Released by lease expiry this window: a late settlement still counts, once.
        self.lease_expired: set[str] = set()
        # grants returned while calls they admitted had not settled yet, and grants closed
        # this window (a late settlement, like one after a lease, still counts once)
        self.returned: set[str] = set()
        self.closed_grants: set[str] = set()
        # spend counted for returned grants whose calls had not settled by their lease's end;
        # their late settlements count only past it
        self.assumed: dict[str, Decimal] = {}
        # when each returned grant began to wait for its calls' settlements (kept in memory only:
        # it tells how far settlement lags, not what was spent)
        self.owed_since: dict[str, datetime] = {}

    @property
    def definition(self) -> BudgetDefinition:
        return BudgetDefinition(
            name=self.name,
            scope=dict(self.scope),
            window=self.window,
            limit_usd=self.limit_usd,
            mode=self.mode,
            thresholds=list(self.thresholds),
            timezone=self.timezone,
        )

    @property
    def reserved_usd(self) -> Decimal:
        return self._reserved

    @property
    def remaining_usd(self) -> Decimal:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    def status(self, now: datetime) -> dict[str, Any]:
        start = self._window_at(now)
        spent = Decimal(0) if start > self.window_start else self.spent_usd
        return {
            "name": self.name,
            "scope": dict(self.scope),
            "window": self.window,
            "window_start": max(start, self.window_start),
            "spent_usd": spent,
            "reserved_usd": self.reserved_usd,
            "limit_usd": self.limit_usd,
            "percent": float(spent / self.limit_usd * 100),
            "mode": self.mode,
        }

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

    def knows_grant(self, grant_id: str) -> bool:
        """Held now, or closed or lapsed this window: its calls' costs count here."""
        known = self.reservations, self.lease_expired, self.closed_grants
        return any(grant_id in ids for ids in known)

    def return_grant(self, grant_id: str, unused_usd: Decimal, now: datetime) -> None:
        check_not_negative(unused_usd)
        self._roll_over_to(now)
        if grant_id in self.reservations and grant_id not in self.returned:
            self._return_grant(grant_id, unused_usd)
            if grant_id in self.returned:
                self.owed_since[grant_id] = now

    def settlement_lags(self, now: datetime, after: timedelta) -> bool:
        """A returned grant's calls have not all settled this long after its return."""
        for grant_id in self.returned:
            if now - self.owed_since.setdefault(grant_id, now) >= after:
                return True
        return False

    def release(self, request_id: str, reason: str, now: datetime) -> None:
        self._roll_over_to(now)
        if request_id in self.reservations:
            self._release(request_id, reason)

    def expire_leases(self, now: datetime) -> list[str]:
        self._roll_over_to(now)
        expired = []
        while self._leases and self._leases[0][0] <= now:
            expires_at, request_id = heapq.heappop(self._leases)
            reservation = self.reservations.get(request_id)
            if reservation is not None and reservation.expires_at == expires_at:
                expired.append(request_id)
        for request_id in expired:
            if request_id in self.returned:
                self._assume_spent(request_id)  # its calls were made: fail closed
            else:
                self._release(request_id, "lease_expired")
        return expired

    @property
    def next_expiry(self) -> datetime | None:
        """When the soonest open lease runs out (None: no reservation is open)."""
        while self._leases and self._leases[0][1] not in self.reservations:
            heapq.heappop(self._leases)
        return self._leases[0][0] if self._leases else None

    def redefine(self, definition: BudgetDefinition, now: datetime) -> None:
        check_same_name(self.name, definition.name)
        self._roll_over_to(now)
        start = window_start(definition.window, definition.timezone, now)
        self._redefine(window_start=start, **_terms(definition))
        self._fire_crossed_thresholds(None)

    def reservation(self, request_id: str) -> Reservation:
        try:
            return self.reservations[request_id]
        except KeyError:
            message = f"budget {self.name!r} has no open reservation {request_id!r}"
            raise UnknownReservationError(message) from None

    # Events

    @event("Redefined")
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

    @event("WindowRolledOver")
    def _roll_over(self, window_start: datetime) -> None:
        self.window_start = window_start
        self.spent_usd = Decimal(0)
        self.fired = set()
        self.lease_expired = set()
        self.closed_grants = set()
        self.assumed = {}

    @event("Reserved")
    def _reserve(self, request_id: str, amount_usd: Decimal, expires_at: datetime) -> None:
        self.reservations[request_id] = Reservation(amount_usd, expires_at)
        self._reserved += amount_usd
        heapq.heappush(self._leases, (expires_at, request_id))

    # Refusals and threshold crossings are published as they are stored, so they name the budget.
    @event("Exceeded")
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

    @event("Settled")
    def _settle(self, request_id: str, cost_usd: Decimal) -> None:
        reservation = self.reservations.pop(request_id, None)
        if reservation is not None:
            self._reserved -= reservation.amount_usd
        self.lease_expired.discard(request_id)
        self.spent_usd += cost_usd

    @event("Released")
    def _release(self, request_id: str, reason: str) -> None:
        self._reserved -= self.reservations.pop(request_id).amount_usd
        self.returned.discard(request_id)
        if reason == "lease_expired":
            self.lease_expired.add(request_id)

    @event("Granted")
    def _grant(self, grant_id: str, amount_usd: Decimal, expires_at: datetime, holder: str) -> None:
        self.reservations[grant_id] = Reservation(amount_usd, expires_at)
        self._reserved += amount_usd
        heapq.heappush(self._leases, (expires_at, grant_id))

    @event("AssumedSpent")
    def _assume_spent(self, grant_id: str) -> None:
        owed = self.reservations.pop(grant_id).amount_usd
        self._reserved -= owed
        self.spent_usd += owed
        self.assumed[grant_id] = owed
        self.returned.discard(grant_id)
        self.owed_since.pop(grant_id, None)
        self.closed_grants.add(grant_id)

    @event("SettledUnderGrant")
    def _settle_granted(self, grant_id: str, request_id: str, cost_usd: Decimal) -> None:
        counted = min(cost_usd, self.assumed.get(grant_id, Decimal(0)))
        if counted:
            self.assumed[grant_id] -= counted  # counted as spent when its lease ran out
        self.spent_usd += cost_usd - counted
        held = self.reservations.get(grant_id)
        if held is not None:
            self._hold_less(grant_id, held, cost_usd)

    @event("GrantReturned")
    def _return_grant(self, grant_id: str, unused_usd: Decimal) -> None:
        self.returned.add(grant_id)
        self._hold_less(grant_id, self.reservations[grant_id], unused_usd)

    def _hold_less(self, grant_id: str, held: Reservation, amount_usd: Decimal) -> None:
        freed = min(amount_usd, held.amount_usd)
        self._reserved -= freed
        if held.amount_usd == freed and grant_id in self.returned:
            del self.reservations[grant_id]  # returned and every call it admitted settled
            self.returned.discard(grant_id)
            self.owed_since.pop(grant_id, None)
            self.closed_grants.add(grant_id)
        else:
            self.reservations[grant_id] = held._replace(amount_usd=held.amount_usd - freed)

    @event("ThresholdReached")
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

    def _set_terms(
        self,
        scope: dict[ScopeKey, str],
        window: Window,
        limit_usd: Decimal,
        mode: Mode,
        thresholds: list[float],
        timezone: str,
    ) -> None:
        self.scope = scope
        self.window = window
        self.limit_usd = limit_usd
        self.mode = mode
        self.thresholds = thresholds
        self.timezone = timezone

    def _window_at(self, now: datetime) -> datetime:
        return window_start(self.window, self.timezone, now)

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

    def _published(self) -> dict[str, Any]:
        return {"name": self.name, "scope": dict(self.scope), "mode": self.mode,
                "window_start": self.window_start}  # fmt: skip


def _terms(definition: BudgetDefinition) -> dict[str, Any]:
    return definition.model_dump(exclude={"name"})


def check_not_negative(amount_usd: Decimal) -> None:
    if amount_usd < 0:
        raise ValueError(f"amount ${amount_usd} is negative")


def check_positive_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise ValueError(f"lease {lease} is not positive")


def check_same_name(name: str, new_name: str) -> None:
    if name != new_name:
        raise BudgetRenamedError(f"budget {name!r} cannot be redefined as {new_name!r}")
