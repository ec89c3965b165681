"""The admission desk: every budget command that arrives together is saved in one transaction.

Reservations, early settlements and lease expiry queue up here while the store is busy; one
batch then applies them all in memory and commits once, so at concurrency 64 admission costs one
commit per batch, not one per request. A reservation that will fit once open reservations settle
waits here (up to its `wait_s`) instead of being refused.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llmbus.services.usage.application.batch import Batch, BatchResult, Waiting
from llmbus.services.usage.application.budget_book import BudgetBook
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import BudgetAdmission, BudgetReservation
from llmbus.shared.errors import UnavailableError

log = logging.getLogger("llmbus.usage.admission")
RunOnStore = Callable[..., Awaitable[Any]]


class AdmissionDesk:
    def __init__(
        self,
        book: BudgetBook,
        on_store: RunOnStore,
        on_refused: Callable[[], None],
        sweep_every_s: float = 1.0,
    ) -> None:
        self.book = book
        self.on_store = on_store
        self.on_refused = on_refused  # refusals are BudgetExceeded events for the outbox
        self.sweep_every_s = sweep_every_s
        self.new: list[Waiting] = []
        self.settlements: list[UsageRecorded] = []
        self.waiting: list[Waiting] = []
        self.answers: dict[int, asyncio.Future[BudgetAdmission]] = {}
        self.changed = False  # room may have been freed: retry what waits
        self.wake = asyncio.Event()
        self.stopped = False

    async def reserve(self, reservation: BudgetReservation) -> BudgetAdmission:
        if self.stopped:
            # not a refusal: the worker's request is redelivered and asks again
            raise UnavailableError("the usage service is stopping")
        loop = asyncio.get_running_loop()
        waiting = Waiting(reservation, deadline=loop.time() + reservation.wait_s)
        answer = loop.create_future()
        self.answers[id(waiting)] = answer
        self.new.append(waiting)
        self.wake.set()
        return await answer

    def settle(self, usage: UsageRecorded) -> None:
        self.settlements.append(usage)
        self.wake.set()

    def room_freed(self) -> None:
        """Something outside the desk settled or changed budgets: retry what waits."""
        self.changed = True
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not stop.is_set():
            sweep = loop.time() >= next_sweep
            if sweep:
                next_sweep = loop.time() + self.sweep_every_s
            await self._once(loop.time(), expire=sweep)
            deadlines = [w.deadline for w in self.waiting]
            timeout = max(0.0, min([next_sweep, *deadlines]) - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for
                    await self.wake.wait()
            self.wake.clear()
            # one more turn of the loop: requests already read off the socket join this batch
            await asyncio.sleep(0)
        self.stopped = True
        for waiting in self.new + self.waiting:
            # not a refusal: the worker's request is redelivered and asks again
            self._fail(waiting, UnavailableError("the usage service is stopping"))

    async def _once(self, now: float, expire: bool) -> None:
        due = any(w.deadline <= now for w in self.waiting)
        retry = self.changed or bool(self.settlements) or expire or due
        if not (self.new or self.settlements or expire or (retry and self.waiting)):
            return
        batch = Batch(
            settlements=self.settlements,
            waiting=(self.waiting if retry else []) + self.new,
            expire=expire,
        )
        for waiting in batch.waiting:
            waiting.may_wait = now < waiting.deadline
        kept = [] if retry else self.waiting
        self.settlements, self.new, self.changed = [], [], False
        try:
            result: BatchResult = await self.on_store(self.book.apply, batch)
        except Exception as exc:
            log.exception("budget batch of %d reservations failed", len(batch.waiting))
            message = f"budget store failed: {exc}"
            for waiting in batch.waiting:
                self._fail(waiting, RuntimeError(message))
            self.waiting = kept
            return
        for waiting, admission in result.answered:
            self._answer(waiting, admission)
        self.waiting = kept + result.waiting
        if result.expired:
            log.warning("released %d reservations whose lease expired", len(result.expired))
        if result.refused:
            self.on_refused()

    def _answer(self, waiting: Waiting, admission: BudgetAdmission) -> None:
        answer = self.answers.pop(id(waiting), None)
        if answer is not None and not answer.done():
            answer.set_result(admission)

    def _fail(self, waiting: Waiting, error: Exception) -> None:
        answer = self.answers.pop(id(waiting), None)
        if answer is not None and not answer.done():
            answer.set_exception(error)
