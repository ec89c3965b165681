"""The usage service process: records UsageRecorded, projects it into DuckDB, answers queries."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

from llmbus.services.usage.application import UsageApplication
from llmbus.services.usage.budgets import BudgetBook, Clock, utc_now
from llmbus.services.usage.desk import AdmissionDesk
from llmbus.services.usage.outbox import TOPICS, route
from llmbus.services.usage.projection import UsageProjection
from llmbus.services.usage.recordable import Unrecordable, out_of_bounds
from llmbus.services.usage.recording import UsageRecording
from llmbus.shared import bus, subjects
from llmbus.shared.contracts import ErrorReply, ReplyErrorType, UsageQuery, UsageRecorded
from llmbus.shared.contracts.budget import (
    BudgetDefinition,
    BudgetGrantRequest,
    BudgetGrantReturn,
    BudgetRemainingList,
    BudgetReservation,
    GrantHolder,
    RequestAttributes,
)
from llmbus.shared.eventstore import open_store
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.usage")
FETCH_BATCH = 500
PROJECT_EVERY_S = 0.25
# a worker holding grants says so every second (see GrantHolder); one not heard from for this
# long holds none, or is gone and its grants lapse with their lease
HOLDER_TTL_S = 3.0
# how long a budget change waits for the workers holding grants to drop them
REVOKE_TIMEOUT_S = 2.0
T = TypeVar("T")


class UsageService:
    def __init__(
        self, settings: Settings, app: UsageApplication, nc: NatsClient, clock: Clock = utc_now
    ) -> None:
        self.settings = settings
        self.app = app
        self.nc = nc
        self.js = nc.jetstream()
        # DuckDB connections are not for concurrent use: one thread owns the projection.
        self.duck = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb")
        # budgets live in memory: one thread changes them and writes the store
        self.store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-store")
        self.book = BudgetBook(app, clock)
        self.relay = OutboxRelay(
            app, self.js, route, service="usage", name="usage-outbox", topics=TOPICS,
            on_loop=settings.event_store == "sqlite",
        )  # fmt: skip
        self.desk = AdmissionDesk(self.book, self._on_store, on_refused=self.relay.poke)
        self.recording = UsageRecording(app, self.book, self.js, self._on_store)
        self.projection: UsageProjection | None = None
        self._catch_up_lock = asyncio.Lock()
        self.answering: set[asyncio.Task[None]] = set()
        self.projecting = asyncio.Event()  # stored usage not projected yet
        self.holders: dict[str, float] = {}  # worker -> when it last said it holds grants

    async def _on_duck(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.duck, fn, *args)

    async def _on_store(self, fn: Callable[..., T], *args: Any) -> T:
        if self.settings.event_store == "sqlite":
            # local SQLite commits take ~0.3 ms: on the loop they cost less than a thread hop,
            # and the loop is then the one thread that changes budgets
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.store, fn, *args)

    async def start(self) -> None:
        self.projection = await self._on_duck(UsageProjection, self.settings.duckdb_path)
        await self._on_store(self.book.load, self.settings.budgets)
        await self.nc.subscribe(subjects.USAGE_QUERY, queue="usage", cb=self.answer)
        await self.nc.subscribe(subjects.BUDGET_RESERVE, queue="usage", cb=self.admit)
        await self.nc.subscribe(subjects.BUDGET_STATUS, queue="usage", cb=self.budget_status)
        await self.nc.subscribe(subjects.BUDGET_REMAINING, queue="usage", cb=self.remaining)
        await self.nc.subscribe(subjects.BUDGET_SETTLE, queue="usage", cb=self.settle)
        await self.nc.subscribe(subjects.BUDGET_GRANT, queue="usage", cb=self.grant)
        await self.nc.subscribe(subjects.BUDGET_GRANT_RETURN, queue="usage", cb=self.take_back)
        await self.nc.subscribe(subjects.BUDGET_HOLDERS, cb=self.heard_holder)  # every replica
        # grants from before this start (or from a replica that changed budgets meanwhile) are
        # dropped before any change is answered: workers ask afresh
        await self._revoke_grants(wait=False)
        await self.nc.subscribe(subjects.BUDGET_SET, queue="usage", cb=self.define)

    async def reply(
        self, msg: Msg, serve: Callable[[bytes], Awaitable[bytes]], invalid: str
    ) -> None:
        """Answer a request: the reply, or an ErrorReply saying what was wrong with it."""
        try:
            answer = await serve(msg.data)
        except (ValidationError, ValueError) as exc:
            await msg.respond(error_reply(invalid, str(exc)))
        except Exception as exc:
            log.exception("%s failed", msg.subject)
            await msg.respond(error_reply("internal", f"{msg.subject} failed: {exc}"))
        else:
            await msg.respond(answer)

    async def admit(self, msg: Msg) -> None:
        # a subscription runs its callback one message at a time: answer in a task of its own,
        # so that the reservations arriving together reach the desk together
        task = asyncio.create_task(self.reply(msg, self._admit, "invalid_reservation"))
        self.answering.add(task)
        task.add_done_callback(self.answering.discard)

    async def _admit(self, data: bytes) -> bytes:
        reservation = BudgetReservation.model_validate_json(data)
        admission = await self.desk.reserve(reservation)
        return admission.model_dump_json().encode()

    async def settle(self, msg: Msg) -> None:
        try:
            usage = UsageRecorded.model_validate_json(msg.data)
        except ValidationError:
            # the UsageRecorded on its way through JetStream settles it all the same
            log.warning("ignoring an invalid early settlement on %s", msg.subject)
            return
        if out_of_bounds(usage) is not None:
            log.warning("ignoring an early settlement beyond bounds on %s", msg.subject)
            return  # its UsageRecorded is parked
        if usage.grant_id is not None:
            return  # a grant's calls settle once, from the UsageRecorded stream
        self.desk.settle(usage)
        self.relay.poke()  # settlements may cross thresholds

    async def grant(self, msg: Msg) -> None:
        await self.reply(msg, self._grant, "invalid_grant")

    async def _grant(self, data: bytes) -> bytes:
        request = BudgetGrantRequest.model_validate_json(data)
        self.holders[request.holder] = time.monotonic()
        # while reservations wait for room, what frees up goes to them, not to new grants
        grant = await self._on_store(self.book.grant, request, bool(self.desk.waiting))
        return grant.model_dump_json().encode()

    async def take_back(self, msg: Msg) -> None:
        await self.reply(msg, self._take_back, "invalid_grant_return")

    async def _take_back(self, data: bytes) -> bytes:
        returned = BudgetGrantReturn.model_validate_json(data)
        budgets = await self._on_store(self.book.return_grant, returned)
        self.desk.room_freed()
        return json.dumps({"grant_id": returned.grant_id, "budgets": budgets}).encode()

    async def heard_holder(self, msg: Msg) -> None:
        try:
            holder = GrantHolder.model_validate_json(msg.data)
        except ValidationError:
            log.warning("ignoring an invalid message on %s", msg.subject)
            return
        if holder.grants:
            self.holders[holder.holder] = time.monotonic()
        else:
            self.holders.pop(holder.holder, None)

    async def _revoke_grants(self, wait: bool = True) -> None:
        """Every worker drops its grants; wait until those known to hold some have said so, so
        that a changed budget applies to the next request (a worker that does not answer is
        gone or cut off: its grants lapse with their lease, and it admits nothing meanwhile)."""
        now = time.monotonic()
        waiting_for = {h for h, seen in self.holders.items() if now - seen < HOLDER_TTL_S}
        if not wait or not waiting_for:
            await self.nc.publish(subjects.BUDGET_CHANGED, b"{}")
            await self.nc.flush()
            return
        inbox = self.nc.new_inbox()
        acked: asyncio.Queue[bytes] = asyncio.Queue()

        async def ack(msg: Msg) -> None:
            acked.put_nowait(msg.data)

        sub = await self.nc.subscribe(inbox, cb=ack)
        try:
            await self.nc.publish(subjects.BUDGET_CHANGED, b"{}", reply=inbox)
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

    async def define(self, msg: Msg) -> None:
        await self.reply(msg, self._define, "invalid_budget")

    async def _define(self, data: bytes) -> bytes:
        definition = BudgetDefinition.model_validate_json(data)
        budget = await self._on_store(self.book.define, definition)
        log.info("budget %s defined: %s", budget.name, definition.model_dump_json())
        await self._revoke_grants()
        self.relay.poke()
        self.desk.room_freed()  # a higher limit may admit what waits
        return json.dumps(jsonable(budget.status(self.book.clock()))).encode()

    async def budget_status(self, msg: Msg) -> None:
        rows = await self._on_store(self.book.status)
        await msg.respond(json.dumps([jsonable(row) for row in rows]).encode())

    async def remaining(self, msg: Msg) -> None:
        await self.reply(msg, self._remaining, "invalid_request")

    async def _remaining(self, data: bytes) -> bytes:
        attributes = RequestAttributes.model_validate_json(data or b"{}").attributes()
        rows = await self._on_store(self.book.remaining_for, attributes)
        return BudgetRemainingList(budgets=rows).model_dump_json().encode()

    async def consume(self, stop: asyncio.Event) -> None:
        log.info("usage service ready")
        await bus.consume(
            self.js, subjects.USAGE_CONSUMER, subjects.EVENTS_STREAM, self.record, stop,
            FETCH_BATCH, "usage events",
        )  # fmt: skip

    async def record(self, msgs: list[Msg]) -> None:
        await self.recording.record(msgs)
        self.relay.poke()
        self.desk.room_freed()
        self.projecting.set()
        # acked only once stored or parked: a crash before this line redelivers, and ids dedupe
        await asyncio.gather(*(m.ack() for m in msgs))

    async def project(self, stop: asyncio.Event, every_s: float = PROJECT_EVERY_S) -> None:
        """Keep DuckDB close behind the store, a batch at a time. Queries catch up themselves,
        so the lag is never seen; projecting less often keeps the DuckDB thread (and the GIL)
        away from admission, which runs on the loop."""
        while not stop.is_set():
            await self.projecting.wait()
            self.projecting.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("projecting usage into DuckDB failed; retrying")
                self.projecting.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def catch_up(self) -> None:
        """Project every stored usage event into DuckDB (exactly once: position is in DuckDB).
        A stored event it cannot hold is skipped, and parked."""
        skipped: list[tuple[int, Unrecordable]] = []

        def on_skip(position: int, event: Unrecordable) -> None:  # on the DuckDB thread
            skipped.append((position, event))

        async with self._catch_up_lock:
            assert self.projection is not None
            while True:
                position = self.projection.position
                batch = await asyncio.to_thread(self.app.recorded_since, position, 5000)
                if not batch:
                    return
                await self._on_duck(self.projection.apply, batch, on_skip)
                for at, event in skipped:
                    await self.recording.park_stored(at, event)
                skipped.clear()

    async def answer(self, msg: Msg) -> None:
        await self.reply(msg, self._answer, "invalid_query")

    async def _answer(self, data: bytes) -> bytes:
        query = UsageQuery.model_validate_json(data)
        await self.catch_up()
        assert self.projection is not None
        result = await self._on_duck(self.projection.query, query)
        return result.model_dump_json().encode()

    async def close(self) -> None:
        if self.projection is not None:
            await self._on_duck(self.projection.close)
        self.duck.shutdown()
        self.store.shutdown()


def error_reply(error_type: str, message: str) -> bytes:
    # every invalid request is invalid_request now (see ReplyErrorType)
    known = error_type if error_type in set(ReplyErrorType) else ReplyErrorType.invalid_request
    return ErrorReply(error_type=ReplyErrorType(known), message=message).model_dump_json().encode()


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()} | {
        k: v.isoformat() for k, v in row.items() if isinstance(v, datetime)
    }


async def serve(settings: Settings, stop: asyncio.Event, clock: Clock = utc_now) -> None:
    app = await asyncio.to_thread(open_store, UsageApplication, settings, "usage")
    nc = await bus.connect(settings, "llmbus-usage")
    service = UsageService(settings, app, nc, clock)
    try:
        await bus.provision(nc.jetstream(), settings)
        await service.start()
        await service.catch_up()
        relay_stop = asyncio.Event()
        relaying = asyncio.create_task(service.relay.run(relay_stop))
        # the desk also releases what workers that died had reserved, once their leases run out
        admitting = asyncio.create_task(service.desk.run(stop))
        projecting = asyncio.create_task(service.project(stop))
        await service.consume(stop)
        await admitting
        service.projecting.set()
        await projecting
        relay_stop.set()
        service.relay.poke()
        await relaying
    finally:
        await nc.drain()
        await service.close()
        app.close()
