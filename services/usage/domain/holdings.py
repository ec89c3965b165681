"""What a budget holds for calls in flight: its open reservations and grants, their sum, and
an index of their leases. Plain state, changed only by the Budget's events."""

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from llmbus.shared.money import usd


class Reservation(NamedTuple):
    amount_usd: Decimal
    expires_at: datetime


@dataclass
class Holdings:
    open: dict[str, Reservation] = field(default_factory=dict)
    # the sum of open reservations, kept as they change rather than summed on every admission
    total: Decimal = Decimal(0)
    # (expires_at, id) of reservations, soonest first. An index, not state: entries of
    # reservations closed since are skipped when they come up, so it is not compared.
    leases: list[tuple[datetime, str]] = field(default_factory=list, compare=False, repr=False)

    def __contains__(self, reservation_id: str) -> bool:
        return reservation_id in self.open

    def hold(self, reservation_id: str, amount_usd: Decimal, expires_at: datetime) -> None:
        self.open[reservation_id] = Reservation(amount_usd, expires_at)
        self.total += amount_usd
        heapq.heappush(self.leases, (expires_at, reservation_id))

    def close(self, reservation_id: str) -> Decimal:
        """Stop holding an open reservation; what it held."""
        amount_usd = self.open.pop(reservation_id).amount_usd
        self.total -= amount_usd
        return amount_usd

    def hold_less(self, reservation_id: str, amount_usd: Decimal) -> Decimal:
        """Hold up to `amount_usd` less (never below zero); what it still holds."""
        held = self.open[reservation_id]
        freed = min(amount_usd, held.amount_usd)
        self.total -= freed
        self.open[reservation_id] = held._replace(amount_usd=held.amount_usd - freed)
        return held.amount_usd - freed

    def due(self, now: datetime) -> list[str]:
        """The open reservations whose lease has run out by `now`, soonest first."""
        expired = []
        while self.leases and self.leases[0][0] <= now:
            expires_at, reservation_id = heapq.heappop(self.leases)
            reservation = self.open.get(reservation_id)
            if reservation is not None and reservation.expires_at == expires_at:
                expired.append(reservation_id)
        return expired

    @property
    def next_expiry(self) -> datetime | None:
        """When the soonest open lease runs out (None: no reservation is open)."""
        while self.leases and self.leases[0][1] not in self.open:
            heapq.heappop(self.leases)
        return self.leases[0][0] if self.leases else None


def check_not_negative(amount_usd: Decimal) -> None:
    if amount_usd < 0:
        raise ValueError(f"amount {usd(amount_usd)} is negative")


def check_positive_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise ValueError(f"lease {lease} is not positive")
