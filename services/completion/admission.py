"""Budget admission for a completion worker: under a grant it holds, else one reservation.

The fast path admits a request against a grant (see grants.py) with no round trip. A worker
asks the usage service for a grant on the first request of a set of attributes, one ask at a
time per set. Near a limit the usage service grants nothing, and requests reserve one by one
on llmbus.budget.reserve, where they may wait for room; that path is the bound's last word.

When budgets change, every worker drops its grants before the change is answered
(llmbus.budget.changed), so a new or lowered budget applies to the next request.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from decimal import Decimal

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from pydantic import ValidationError

from llmbus.services.completion.grants import Grant, GrantLedger, Key
from llmbus.shared import subjects
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.contracts import CompletionRequested, ErrorReply, UsageRecorded
from llmbus.shared.contracts.budget import (
    BudgetAdmission,
    BudgetGrant,
    BudgetGrantRequest,
    BudgetGrantReturn,
    BudgetReservation,
    GrantHolder,
    settled_cost,
)
from llmbus.shared.errors import UnavailableError
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.completion.admission")

RESERVE_TIMEOUT_S = 5.0  # on top of the time a reservation may wait for room
GRANT_TIMEOUT_S = 5.0
GRANT_ADMIT_S = 10.0  # a grant admits this long, then a fresh one is sized from the room left
NOT_GRANTED_S = 1.0  # after a refused grant, reserve one by one this long before asking again
ASKS = 3  # a burst can fill a fresh grant before all it waited for are in: ask again
TICK_S = 0.2  # how often finished grants are returned
ANNOUNCE_S = 1.0  # how often a worker holding grants says so (usage's HOLDER_TTL_S is 3)


class AdmissionUnavailableError(UnavailableError):
    """Budgets are on and the usage service did not answer: the request waits and is tried
    again."""


class Admission:
    def __init__(self, settings: Settings, catalog: ModelCatalog, nc: NatsClient) -> None:
        self.settings = settings
        self.catalog = catalog
        self.nc = nc
        self.grant_requests = settings.completion.grant_requests
        # once fewer than half of grant_requests worst cases fit (on top of the requests
        # running), the next grant is asked for in the background: well ahead of the last
        # admission, yet not by every fresh grant, which the running requests fill partly
        self.refill_at = Decimal(max(self.grant_requests // 2, 1))
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ledger = GrantLedger()
        self.asking: dict[Key, asyncio.Task[None]] = {}
        self.not_granted_until: dict[Key, float] = {}
        self.revocations = 0  # a grant asked for before a revocation is not used
        self.wake = asyncio.Event()

    async def start(self) -> None:
        if self.settings.admission_on:
            await self.nc.subscribe(subjects.BUDGET_CHANGED, cb=self._revoke)

    async def admit(
        self,
        request: CompletionRequested,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        reservation_id: str | None = None,
        role: str | None = None,
        wait: bool = True,
    ) -> BudgetAdmission | None:
        """None when admitted; the refusal when a hard budget cannot cover the worst case.
        A fallback model reserves again under a reservation_id of its own. wait=False: refused
        at once rather than waiting for open reservations to settle (another model may pay)."""
        worst = self.catalog.worst_case_cost(model, messages, max_tokens)
        reservation_id = reservation_id or request.request_id
        attributes = {"user": request.user_id, "team": request.team_id,
                      "project": request.project_id, "model": model, "role": role or request.role}  # fmt: skip
        key: Key = tuple(attributes.values())
        for _ in range(ASKS if self.grant_requests > 0 else 0):
            if self.ledger.admit(key, reservation_id, worst, time.monotonic()):
                if key not in self.asking and self.ledger.running_low(key, worst * self.refill_at):
                    # ask for the next grant now, so that no request waits when this one is full
                    self._start_ask(key, attributes, worst)
                return None
            if time.monotonic() < self.not_granted_until.get(key, 0.0):
                break
            # full, or none yet: one ask per key at a time, whose grant the waiting ones share
            await self._ask(key, attributes, worst)
        wait_s = self.settings.completion.admission_wait_s if wait else 0.0
        return await self._reserve(reservation_id, worst, attributes, wait_s)

    def grant_of(self, request_id: str) -> str | None:
        return self.ledger.grant_of(request_id)

    async def settle(self, usage: UsageRecorded) -> None:
        """The call ended: free the rest of its worst case, under its grant or at the usage
        service (its reservation; the UsageRecorded on its way settles it all the same)."""
        cost = settled_cost(usage.cost_usd)
        if self.ledger.settle(usage.reservation_id or usage.request_id, cost, time.monotonic()):
            return
        if self.settings.admission_on:
            await self.nc.publish(subjects.BUDGET_SETTLE, usage.model_dump_json().encode())

    def abandon(self, request_id: str) -> None:
        """The request ended without settling (a duplicate stored first, or an error)."""
        self.ledger.abandon(request_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Return grants once their requests have ended; say that this worker holds grants."""
        announced = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self.wake.wait()
            self.wake.clear()
            await self._return_due()
            if self.ledger.held and time.monotonic() - announced >= ANNOUNCE_S:
                await self._announce()
                announced = time.monotonic()

    async def close(self) -> None:
        """After the last request: give every grant back."""
        if self.asking:
            await asyncio.gather(*self.asking.values(), return_exceptions=True)
        self.ledger.revoke()
        await self._return_due()

    async def _ask(self, key: Key, attributes: dict[str, str | None], worst: Decimal) -> None:
        """Wait for a grant for this key: the ask already out, or a new one."""
        asking = self.asking.get(key) or self._start_ask(key, attributes, worst)
        await asyncio.shield(asking)

    def _start_ask(
        self, key: Key, attributes: dict[str, str | None], worst: Decimal
    ) -> "asyncio.Task[None]":
        """One ask per key at a time: the requests that need a grant meanwhile share it."""

        async def ask() -> None:
            try:
                granted = await self._ask_once(key, attributes, worst)
            except Exception:
                log.exception("asking for a budget grant failed; reserving one by one")
                granted = False
            finally:
                del self.asking[key]
            if not granted:
                self.not_granted_until[key] = time.monotonic() + NOT_GRANTED_S

        task = asyncio.create_task(ask())
        self.asking[key] = task
        return task

    async def _ask_once(self, key: Key, attributes: dict[str, str | None], worst: Decimal) -> bool:
        revocations, sent = self.revocations, time.monotonic()
        admit_s = min(GRANT_ADMIT_S, self.settings.budget_lease_s)
        request = BudgetGrantRequest(
            grant_id=f"grant:{self.holder}:{uuid.uuid4().hex[:12]}",
            holder=self.holder,
            # room for every request this worker can run at once, and grant_requests more
            want_usd=worst * (self.settings.completion.concurrency + self.grant_requests),
            min_usd=worst,
            # its last admission may start a call just before admit_s: lease that call too
            lease_s=admit_s + self.settings.budget_lease_s,
            **attributes,
        )
        try:
            reply = await self.nc.request(
                subjects.BUDGET_GRANT, request.model_dump_json().encode(), timeout=GRANT_TIMEOUT_S
            )
            grant = BudgetGrant.model_validate_json(reply.data)
        except (TimeoutError, NoRespondersError, ValidationError) as exc:
            # an older usage service, or none: reserving tells the request what is wrong
            log.debug("no budget grant (%s); reserving one by one", type(exc).__name__)
            return False
        if not grant.granted:
            return False
        held = Grant(grant.grant_id, key, grant.amount_usd, admit_until=sent + admit_s,
                     last_used=time.monotonic())  # fmt: skip
        self.ledger.add(held)
        if self.revocations != revocations:
            self.ledger.close(held)  # budgets changed while asking: it may be stale
        await self._announce()  # every usage service now waits for us on a budget change
        return True

    async def _reserve(
        self, request_id: str, worst: Decimal, attributes: dict[str, str | None], wait_s: float
    ) -> BudgetAdmission | None:
        reservation = BudgetReservation(
            request_id=request_id,
            amount_usd=worst,
            lease_s=self.settings.budget_lease_s,
            wait_s=wait_s,
            **attributes,
        )
        try:
            reply = await self.nc.request(
                subjects.BUDGET_RESERVE,
                reservation.model_dump_json().encode(),
                timeout=reservation.wait_s + RESERVE_TIMEOUT_S,
            )
        except (TimeoutError, NoRespondersError):
            # never call a model unadmitted: the request is redelivered and tried again
            raise AdmissionUnavailableError(
                f"no answer on {subjects.BUDGET_RESERVE}: is the usage service running?"
            ) from None
        try:
            admission = BudgetAdmission.model_validate_json(reply.data)
        except ValidationError:
            error = ErrorReply.model_validate_json(reply.data)
            raise AdmissionUnavailableError(
                f"{subjects.BUDGET_RESERVE} failed: {error.message}"
            ) from None
        return None if admission.admitted else admission

    async def _revoke(self, msg: Msg) -> None:
        self.revocations += 1
        revoked = self.ledger.revoke()
        self.not_granted_until.clear()  # a higher limit may leave room for grants again
        if revoked:
            log.info("budgets changed: dropped %d grants", len(revoked))
        if msg.reply:
            await msg.respond(GrantHolder(holder=self.holder).model_dump_json().encode())
        self.wake.set()

    async def _return_due(self) -> None:
        due = list(self.ledger.due(time.monotonic()))
        for grant in due:
            returned = BudgetGrantReturn(
                grant_id=grant.grant_id, unused_usd=grant.unused_usd, admitted=grant.admitted
            )
            try:
                reply = await self.nc.request(
                    subjects.BUDGET_GRANT_RETURN,
                    returned.model_dump_json().encode(),
                    timeout=GRANT_TIMEOUT_S,
                )
                failed = b'"error_type"' in reply.data  # an ErrorReply: the store failed
            except (TimeoutError, NoRespondersError):
                failed = True
            if failed:
                # kept and tried again; if this worker stops first, the grant is held until its
                # lease runs out
                log.warning("could not return grant %s; trying again", grant.grant_id)
                return
            self.ledger.returned(grant)
        if due and not self.ledger.held:
            await self._announce()  # holding none: no budget change needs to wait for us

    async def _announce(self) -> None:
        holder = GrantHolder(holder=self.holder, grants=self.ledger.held)
        await self.nc.publish(subjects.BUDGET_HOLDERS, holder.model_dump_json().encode())
