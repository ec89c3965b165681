"""A worker's budget grants: budget held for many requests, admitted here without a round trip.

A grant covers the requests of one set of attributes (user, team, project, model, role). A
request is admitted under it while its worst case fits in what is left: the worst cases of the
requests still running plus the true costs of those that ended. Ending a request gives back the
difference at once. A grant stops admitting when it is full, idle, old or revoked; once its last
request has ended it goes back, and the usage service releases what it did not use.

Pure bookkeeping: time is passed in, and nothing here talks to NATS.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

Key = tuple[str | None, ...]


@dataclass
class Grant:
    grant_id: str
    key: Key
    amount_usd: Decimal | None  # None: no hard budget matches, nothing to bound
    admit_until: float  # no admissions after this (the worker's monotonic clock)
    last_used: float
    used_usd: Decimal = Decimal(0)  # worst cases running + true costs ended
    running: int = 0
    admitted: int = 0
    closed: bool = False

    def fits(self, worst_usd: Decimal) -> bool:
        return self.amount_usd is None or self.used_usd + worst_usd <= self.amount_usd

    @property
    def unused_usd(self) -> Decimal:
        if self.amount_usd is None:
            return Decimal(0)
        return max(self.amount_usd - self.used_usd, Decimal(0))


@dataclass
class GrantLedger:
    idle_s: float = 1.0
    open: dict[Key, Grant] = field(default_factory=dict)  # the one admitting, per key
    closed: dict[str, Grant] = field(default_factory=dict)  # draining, then returned
    running: dict[str, tuple[Grant, Decimal]] = field(default_factory=dict)  # request -> worst

    def admit(self, key: Key, request_id: str, worst_usd: Decimal, now: float) -> str | None:
        """The grant the request is admitted under, or None: ask for one, or reserve."""
        grant = self.open.get(key)
        if grant is None:
            return None
        if now >= grant.admit_until or not grant.fits(worst_usd):
            self.close(grant)  # full or old: a fresh grant is sized from the room left now
            return None
        grant.used_usd += worst_usd
        grant.running += 1
        grant.admitted += 1
        grant.last_used = now
        self.running[request_id] = (grant, worst_usd)
        return grant.grant_id

    def running_low(self, key: Key, room_usd: Decimal) -> bool:
        """The open grant has less than `room_usd` left: time to ask for the next."""
        grant = self.open.get(key)
        return (
            grant is not None
            and grant.amount_usd is not None
            and grant.amount_usd - grant.used_usd < room_usd
        )

    def add(self, grant: Grant) -> None:
        previous = self.open.get(grant.key)
        if previous is not None:
            self.close(previous)
        self.open[grant.key] = grant

    def grant_of(self, request_id: str) -> str | None:
        running = self.running.get(request_id)
        return running[0].grant_id if running else None

    def settle(self, request_id: str, cost_usd: Decimal, now: float) -> bool:
        """The request ended and cost this much: the rest of its worst case is free again."""
        running = self.running.pop(request_id, None)
        if running is None:
            return False
        grant, worst_usd = running
        grant.used_usd += cost_usd - worst_usd
        grant.running -= 1
        grant.last_used = now
        return True

    def abandon(self, request_id: str) -> None:
        """The request ended without a known cost: its worst case stays used."""
        running = self.running.pop(request_id, None)
        if running is not None:
            running[0].running -= 1

    def revoke(self) -> list[str]:
        """Budgets changed: nothing more is admitted under any grant held now."""
        revoked = [grant.grant_id for grant in self.open.values()]
        for grant in list(self.open.values()):
            self.close(grant)
        return revoked

    def due(self, now: float) -> Iterator[Grant]:
        """Close idle and old grants; yield the closed ones whose requests have all ended."""
        for grant in list(self.open.values()):
            idle = grant.running == 0 and now - grant.last_used >= self.idle_s
            if idle or now >= grant.admit_until:
                self.close(grant)
        yield from [grant for grant in self.closed.values() if grant.running == 0]

    def returned(self, grant: Grant) -> None:
        self.closed.pop(grant.grant_id, None)

    @property
    def held(self) -> list[str]:
        return [*(g.grant_id for g in self.open.values()), *self.closed]

    def close(self, grant: Grant) -> None:
        if self.open.get(grant.key) is grant:
            del self.open[grant.key]
        grant.closed = True
        self.closed[grant.grant_id] = grant
