"""A budget's state, as its events leave it, and the queries that read it without changing it.

The Budget aggregate (budget.py) inherits these; its commands and events change the state.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from llmbus.services.usage.domain.errors import BudgetRenamedError, UnknownReservationError
from llmbus.services.usage.domain.holdings import Holdings, Reservation
from llmbus.services.usage.domain.window import window_start
from llmbus.shared.contracts.budget import BudgetDefinition, Mode, ScopeKey, Window


class Cover(Enum):
    """Whether a budget can take a reservation now, once its open reservations settle, or never
    in this window (what is already spent leaves too little)."""

    NOW = "now"
    LATER = "later"
    NEVER = "never"


class BudgetState:
    # the terms, as last defined
    name: str
    scope: dict[ScopeKey, str]
    window: Window
    limit_usd: Decimal
    mode: Mode
    thresholds: list[float]
    timezone: str

    # this window
    window_start: datetime
    spent_usd: Decimal
    holdings: Holdings  # open reservations and grants
    fired: set[float]  # thresholds crossed
    # Released by lease expiry this window: a late settlement still counts, once.
    lease_expired: set[str]
    # grants returned while calls they admitted had not settled yet, and grants closed this
    # window (a late settlement, like one after a lease, still counts once)
    returned: set[str]
    closed_grants: set[str]
    # spend counted for returned grants whose calls had not settled by their lease's end;
    # their late settlements count only past it
    assumed: dict[str, Decimal]
    # when each returned grant began to wait for its calls' settlements (kept in memory only:
    # it tells how far settlement lags, not what was spent)
    owed_since: dict[str, datetime]

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
    def reservations(self) -> dict[str, Reservation]:
        """Open reservations and grants by id (to read: only events change them)."""
        return self.holdings.open

    @property
    def reserved_usd(self) -> Decimal:
        return self.holdings.total

    @property
    def remaining_usd(self) -> Decimal:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    @property
    def next_expiry(self) -> datetime | None:
        """When the soonest open lease runs out (None: no reservation is open)."""
        return self.holdings.next_expiry

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

    def knows_grant(self, grant_id: str) -> bool:
        """Held now, or closed or lapsed this window: its calls' costs count here."""
        known = self.reservations, self.lease_expired, self.closed_grants
        return any(grant_id in ids for ids in known)

    def settlement_lags(self, now: datetime, after: timedelta) -> bool:
        """A returned grant's calls have not all settled this long after its return."""
        for grant_id in self.returned:
            if now - self.owed_since.setdefault(grant_id, now) >= after:
                return True
        return False

    def reservation(self, request_id: str) -> Reservation:
        try:
            return self.reservations[request_id]
        except KeyError:
            message = f"budget {self.name!r} has no open reservation {request_id!r}"
            raise UnknownReservationError(message) from None

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

    def _published(self) -> dict[str, Any]:
        """What a published event says about its budget, so that it names it."""
        return {"name": self.name, "scope": dict(self.scope), "mode": self.mode,
                "window_start": self.window_start}  # fmt: skip


def terms_of(definition: BudgetDefinition) -> dict[str, Any]:
    """A definition's terms, as the Defined and Redefined events carry them."""
    return definition.model_dump(exclude={"name"})


def check_same_name(name: str, new_name: str) -> None:
    if name != new_name:
        raise BudgetRenamedError(f"budget {name!r} cannot be redefined as {new_name!r}")
