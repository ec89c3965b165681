"""The usage service process: records UsageRecorded, projects it into DuckDB, answers queries."""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.services.usage.application import (
    AdmissionDesk,
    BudgetBook,
    Clock,
    UsageApplication,
    utc_now,
)
from llmbus.services.usage.application.keys import KeyRing
from llmbus.services.usage.application.price_book import PriceBook
from llmbus.services.usage.handlers import UsageHandlers, usage_router
from llmbus.services.usage.keys import KeyHandlers, key_routes
from llmbus.services.usage.metering import UsageGauges, usage_metrics
from llmbus.services.usage.outbox import TOPICS, route
from llmbus.services.usage.pricing import PriceHandlers, price_routes
from llmbus.services.usage.projection import UsageProjection
from llmbus.services.usage.projection.export import page_bytes
from llmbus.services.usage.recordable import Unrecordable
from llmbus.services.usage.recording import UsageRecording
from llmbus.shared import consuming, subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.contracts import UsageQuery, UsageQueryResult, UsageRows, UsageRowsQuery
from llmbus.shared.lifecycle import serve_service
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.rpc import SharedConnectionBroker
from llmbus.shared.rpc.replies import HEADER_ROOM
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.usage")
FETCH_BATCH = 500
# at low rates, usage is stored several events a transaction instead of one (a tenth of the
# CPU per event), each up to 100 ms later; from 500 events/s on, nothing waits
RECORD_LINGER = consuming.Linger(seconds=0.1, below=50)
# a DuckDB transaction costs milliseconds however few rows it adds: project once a second, or
# sooner when this many events wait (a query catches up the rest itself, so waits on no more)
PROJECT_EVERY_S = 1.0
PROJECT_AFTER = 1000
CATCH_UP_BATCH = 5000
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
        self.prices = PriceBook(app, clock)
        self.keys = KeyRing(app, clock)
        self.relay = OutboxRelay(
            app, self.js, route, service="usage", name="usage-outbox", topics=TOPICS,
            on_loop=settings.event_store == "sqlite",
        )  # fmt: skip
        self.desk = AdmissionDesk(self.book, self.on_store, on_refused=self.relay.poke)
        self.recording = UsageRecording(app, self.book, self.js, self.on_store)
        self.projection: UsageProjection | None = None
        self._catch_up_lock = asyncio.Lock()
        self.projecting = asyncio.Event()  # stored usage not projected yet
        self.project_now = asyncio.Event()  # PROJECT_AFTER events (or the stop) wait
        self.unprojected = 0
        gauges = UsageGauges(
            app,
            lambda: self.on_store(self.book.status),
            lambda: self.projection.position if self.projection else None,
        )
        self.metrics = usage_metrics(settings, gauges)
        self.handlers = UsageHandlers(self)
        # requests are served on this process's one connection
        self.broker = SharedConnectionBroker(nc)
        router = usage_router(
            self.handlers, lambda: nc.max_payload, ClientDirectory(nc.jetstream())
        )
        price_routes(router, PriceHandlers(self))
        key_routes(router, KeyHandlers(self))
        self.broker.include_router(router)

    async def on_duck(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.duck, fn, *args)

    async def on_store(self, fn: Callable[..., T], *args: Any) -> T:
        if self.settings.event_store == "sqlite":
            # local SQLite commits take ~0.3 ms: on the loop they cost less than a thread hop,
            # and the loop is then the one thread that changes budgets
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.store, fn, *args)

    async def start(self) -> None:
        self.metrics.start(self.js)  # first: a port in use stops the start
        self.projection = await self.on_duck(UsageProjection, self.settings.duckdb_path)
        await self.on_store(self.book.load, self.settings.budgets)
        await self.on_store(self.prices.load)
        await self.on_store(self.keys.load)
        # grants from before this start (or from a replica that changed budgets meanwhile) are
        # dropped before any change is answered: workers ask afresh
        await self.handlers.revoke_grants(wait=False)
        await self.broker.start()

    async def run(self, stop: asyncio.Event) -> None:
        await self.catch_up()
        # the desk also releases what workers that died had reserved, once their leases run out
        admitting = asyncio.create_task(self.desk.run(stop))
        projecting = asyncio.create_task(self.project(stop))
        await self.consume(stop)
        await admitting
        self.projecting.set()
        self.project_now.set()
        await projecting
        await self.broker.stop()  # answers the requests in hand
        await self.metrics.stop()

    async def consume(self, stop: asyncio.Event) -> None:
        log.info("usage service ready")
        await consuming.consume(
            self.js, subjects.USAGE_CONSUMER, subjects.EVENTS_STREAM, self.record, stop,
            FETCH_BATCH, "usage events", RECORD_LINGER,
        )  # fmt: skip

    async def record(self, msgs: list[Msg]) -> None:
        await self.recording.record(msgs)
        self.relay.poke()
        self.desk.room_freed()
        self.projecting.set()
        self.unprojected += len(msgs)
        if self.unprojected >= PROJECT_AFTER:
            self.project_now.set()
        # acked only once stored or parked: a crash before this line redelivers, and ids dedupe
        await asyncio.gather(*(m.ack() for m in msgs))

    async def project(self, stop: asyncio.Event, every_s: float = PROJECT_EVERY_S) -> None:
        """Keep DuckDB close behind the store, a batch at a time. Queries catch up themselves,
        so the lag is never seen; projecting less often keeps the DuckDB thread (and the GIL)
        away from admission, which runs on the loop, and from the request path's processes."""
        while not stop.is_set():
            await self.projecting.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.project_now.wait(), every_s)
            self.projecting.clear()
            self.project_now.clear()
            self.unprojected = 0
            try:
                await self.catch_up()
            except Exception:
                log.exception("projecting usage into DuckDB failed; retrying")
                self.projecting.set()

    async def catch_up(self) -> None:
        """Project every usage event stored before the call into DuckDB (exactly once: position
        is in DuckDB). A stored event it cannot hold is skipped, and parked. A read shorter than
        a batch has reached what was stored when it began: under steady load there is always
        more, and going on would keep the query waiting for the load to stop."""
        skipped: list[tuple[int, Unrecordable]] = []

        def on_skip(position: int, event: Unrecordable) -> None:  # on the DuckDB thread
            skipped.append((position, event))

        async with self._catch_up_lock:
            assert self.projection is not None
            while True:
                position = self.projection.position
                batch = await asyncio.to_thread(self.app.recorded_since, position, CATCH_UP_BATCH)
                if batch:
                    await self.on_duck(self.projection.apply, batch, on_skip)
                for at, event in skipped:
                    await self.recording.park_stored(at, event)
                skipped.clear()
                if len(batch) < CATCH_UP_BATCH:
                    return

    async def query(self, query: UsageQuery) -> UsageQueryResult:
        await self.catch_up()
        assert self.projection is not None
        result: UsageQueryResult = await self.on_duck(self.projection.query, query)
        return result

    async def rows(self, query: UsageRowsQuery) -> UsageRows:
        """A page of usage rows, sized to fit a reply. The first page catches up, and fixes the
        snapshot (its position) that the next pages read: they need no catching up."""
        if query.through is None:
            await self.catch_up()
        assert self.projection is not None
        max_bytes = page_bytes(self.nc.max_payload, HEADER_ROOM)
        result: UsageRows = await self.on_duck(self.projection.rows, query, max_bytes)
        return result

    async def close(self) -> None:
        await self.metrics.stop()  # if it started, and run did not end
        if self.projection is not None:
            await self.on_duck(self.projection.close)
        self.duck.shutdown()
        self.store.shutdown()


async def serve(settings: Settings, stop: asyncio.Event, clock: Clock = utc_now) -> None:
    async def build(app: UsageApplication, nc: NatsClient) -> UsageService:
        return UsageService(settings, app, nc, clock)

    await serve_service(settings, stop, "usage", UsageApplication, build)
