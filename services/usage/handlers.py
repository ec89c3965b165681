"""The usage service's NATS edge: usage queries and the llmbus.budget.* subjects.

Each handler takes its request model and returns its reply model; shared/rpc turns what they
raise into the ErrorReply. Reserve runs on every completion while admission is on: it only hands
the reservation to the desk, which batches those that arrive together.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from pydantic import ValidationError

from llmbus.services.usage.recordable import out_of_bounds
from llmbus.services.usage.scoping import applies_to, own_attributes, own_rows, own_usage
from llmbus.shared import subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.contracts import (
    UsageQuery,
    UsageQueryResult,
    UsageRecorded,
    UsageRows,
    UsageRowsQuery,
)
from llmbus.shared.contracts.budget import (
    BudgetAdmission,
    BudgetDefinition,
    BudgetGrant,
    BudgetGrantRequest,
    BudgetGrantReturn,
    BudgetGrantReturned,
    BudgetRemainingList,
    BudgetReservation,
    BudgetStatus,
    BudgetStatusList,
    BudgetStatusQuery,
    GrantHolder,
    RequestAttributes,
)
from llmbus.shared.identity import caller, require_admin
from llmbus.shared.rpc import RpcRouter

if TYPE_CHECKING:
    from llmbus.services.usage.service import UsageService

log = logging.getLogger("llmbus.usage")
QUEUE = "usage"
# a worker holding grants says so every second (see GrantHolder); one not heard from for this
# long holds none, or is gone and its grants lapse with their lease
HOLDER_TTL_S = 3.0
# how long a budget change waits for the workers holding grants to drop them
REVOKE_TIMEOUT_S = 2.0


class UsageHandlers:
    def __init__(self, service: "UsageService") -> None:
        self.service = service
        self.holders: dict[str, float] = {}  # worker -> when it last said it holds grants

    async def query(self, query: UsageQuery) -> UsageQueryResult:
        """A usage query, answered from DuckDB once it has caught up with the store. A client
        without admin credentials is answered about its own user only."""
        return await self.service.query(own_usage(caller(), query))

    async def rows(self, query: UsageRowsQuery) -> UsageRows:
        """A page of the usage rows themselves, for an export; a client without admin
        credentials gets its own user's rows only."""
        return await self.service.rows(own_rows(caller(), query))

    async def reserve(self, reservation: BudgetReservation) -> BudgetAdmission:
        """Reserve a request's worst-case cost in every budget it falls under, or refuse it."""
        return await self.service.desk.reserve(reservation)

    async def settle(self, usage: UsageRecorded) -> None:
        """A worker's early settlement: its UsageRecorded, ahead of the one in JetStream."""
        if out_of_bounds(usage) is not None:
            log.warning("ignoring an early settlement beyond bounds of %s", usage.request_id)
            return  # its UsageRecorded is parked
        if usage.grant_id is not None:
            return  # a grant's calls settle once, from the UsageRecorded stream
        self.service.desk.settle(usage)
        self.service.relay.poke()  # settlements may cross thresholds

    async def status(self, _: BudgetStatusQuery) -> BudgetStatusList:
        """Spent, reserved and limit of every budget in its current window (for a client
        without admin credentials, of the budgets its requests fall under)."""
        rows = await self.service.on_store(self.service.book.status)
        statuses = [BudgetStatus.model_validate(row) for row in rows]
        return BudgetStatusList([s for s in statuses if applies_to(caller(), s.scope)])

    async def remaining(self, attributes: RequestAttributes) -> BudgetRemainingList:
        """What is left in each budget that matches a request's attributes (a client's own)."""
        attributes = own_attributes(caller(), attributes)
        rows = await self.service.on_store(self.service.book.remaining_for, attributes.attributes())
        return BudgetRemainingList(budgets=rows)

    async def define(self, definition: BudgetDefinition) -> BudgetStatus:
        """Define or change a budget (admin credentials); answered once workers have dropped
        their grants."""
        require_admin(caller(), "setting a budget")
        service = self.service
        budget = await service.on_store(service.book.define, definition)
        log.info("budget %s defined: %s", budget.name, definition.model_dump_json())
        await self.revoke_grants()
        service.relay.poke()
        service.desk.room_freed()  # a higher limit may admit what waits
        return BudgetStatus.model_validate(budget.status(service.book.clock()))

    async def grant(self, request: BudgetGrantRequest) -> BudgetGrant:
        """Hold budget for a worker to admit many requests against on its own."""
        self.holders[request.holder] = time.monotonic()
        book, desk = self.service.book, self.service.desk
        # while reservations wait for room, what frees up goes to them, not to new grants
        return await self.service.on_store(book.grant, request, bool(desk.waiting))

    async def take_back(self, returned: BudgetGrantReturn) -> BudgetGrantReturned:
        """Release what a returned grant did not use."""
        budgets = await self.service.on_store(self.service.book.return_grant, returned)
        self.service.desk.room_freed()
        return BudgetGrantReturned(grant_id=returned.grant_id, budgets=budgets)

    async def heard_holder(self, holder: GrantHolder) -> None:
        """A worker says it holds grants (or none any more)."""
        if holder.grants:
            self.holders[holder.holder] = time.monotonic()
        else:
            self.holders.pop(holder.holder, None)

    async def revoke_grants(self, wait: bool = True) -> None:
        """Every worker drops its grants; wait until those known to hold some have said so, so
        that a changed budget applies to the next request (a worker that does not answer is
        gone or cut off: its grants lapse with their lease, and it admits nothing meanwhile)."""
        nc = self.service.nc
        now = time.monotonic()
        waiting_for = {h for h, seen in self.holders.items() if now - seen < HOLDER_TTL_S}
        if not wait or not waiting_for:
            await nc.publish(subjects.BUDGET_CHANGED, b"{}")
            await nc.flush()
            return
        inbox = nc.new_inbox()
        acked: asyncio.Queue[bytes] = asyncio.Queue()

        async def ack(msg: Msg) -> None:
            acked.put_nowait(msg.data)

        sub = await nc.subscribe(inbox, cb=ack)
        try:
            await nc.publish(subjects.BUDGET_CHANGED, b"{}", reply=inbox)
            async with asyncio.timeout(REVOKE_TIMEOUT_S):
                while waiting_for:
                    with contextlib.suppress(ValidationError):
                        holder = GrantHolder.model_validate_json(await acked.get())
                        waiting_for.discard(holder.holder)
                        self.holders.pop(holder.holder, None)
        except TimeoutError:
            log.warning(
                "workers %s did not drop their budget grants within %.0f s; those lapse with "
                "their lease", sorted(waiting_for), REVOKE_TIMEOUT_S,
            )  # fmt: skip
        finally:
            await sub.unsubscribe()


def usage_router(
    handlers: UsageHandlers, max_payload: Callable[[], int], clients: ClientDirectory | None = None
) -> RpcRouter:
    router = RpcRouter("usage", QUEUE, max_payload, clients, metered=True)
    router.answer(subjects.USAGE_QUERY, handlers.query)
    router.answer(subjects.USAGE_ROWS, handlers.rows)
    router.answer(subjects.BUDGET_RESERVE, handlers.reserve, hot=True)  # every request's path
    router.answer(subjects.BUDGET_STATUS, handlers.status)
    router.answer(subjects.BUDGET_REMAINING, handlers.remaining)
    router.answer(subjects.BUDGET_SET, handlers.define)
    router.answer(subjects.BUDGET_GRANT, handlers.grant)
    router.answer(subjects.BUDGET_GRANT_RETURN, handlers.take_back)
    router.listen(subjects.BUDGET_SETTLE, handlers.settle, hot=True)  # after every call
    router.listen(subjects.BUDGET_HOLDERS, handlers.heard_holder, queue="")  # every replica
    return router
