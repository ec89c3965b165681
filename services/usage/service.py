"""The usage service process: records UsageRecorded, projects it into DuckDB, answers queries."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from llmbus.services.usage.application import UsageApplication
from llmbus.services.usage.projection import UsageProjection
from llmbus.shared import bus, subjects
from llmbus.shared.contracts import ErrorReply, UsageQuery, UsageRecorded
from llmbus.shared.eventstore import open_store
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.usage")
FETCH_BATCH = 500


class UsageService:
    def __init__(self, settings: Settings, app: UsageApplication, nc: NatsClient) -> None:
        self.settings = settings
        self.app = app
        self.nc = nc
        self.js = nc.jetstream()
        # DuckDB connections are not for concurrent use: one thread owns the projection.
        self.duck = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb")
        self.projection: UsageProjection | None = None
        self._catch_up_lock = asyncio.Lock()

    async def _on_duck(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.duck, fn, *args)

    async def start(self) -> None:
        self.projection = await self._on_duck(UsageProjection, self.settings.duckdb_path)
        await self.nc.subscribe(subjects.USAGE_QUERY, queue="usage", cb=self.answer)

    async def consume(self, stop: asyncio.Event) -> None:
        sub = await self.js.pull_subscribe_bind(
            durable=subjects.USAGE_CONSUMER, stream=subjects.EVENTS_STREAM
        )
        log.info("usage service ready")
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(batch=FETCH_BATCH, timeout=0.5)
                except (NatsTimeoutError, TimeoutError):
                    continue
                try:
                    await self.record(msgs)
                    await self.catch_up()
                except Exception:
                    # the store or DuckDB hiccuped: leave the batch unacked, JetStream redelivers
                    log.exception(
                        "recording %d usage events failed; they will be redelivered", len(msgs)
                    )
                    await asyncio.sleep(1.0)
        finally:
            # a pull subscription with a fetch outstanding would hold up the connection's drain
            await sub.unsubscribe()

    async def record(self, msgs: list[Msg]) -> None:
        events = []
        for msg in msgs:
            try:
                events.append(UsageRecorded.model_validate_json(msg.data))
            except ValidationError as exc:
                await self.dead_letter(msg, str(exc.error_count()) + " schema errors")
        await asyncio.to_thread(self.app.record, events)
        # acked only once stored: a crash before this line redelivers, and ids dedupe
        await asyncio.gather(*(m.ack() for m in msgs))

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        log.warning("dead-lettering an invalid UsageRecorded: %s", reason)
        await self.js.publish(
            subjects.DEAD_LETTER.format(service="usage"),
            msg.data,
            headers={
                subjects.ERROR_TYPE_HEADER: "invalid_event",
                subjects.ERROR_HEADER: reason,
                subjects.ORIGINAL_SUBJECT_HEADER: msg.subject,
                subjects.MSG_ID_HEADER: f"dlq:{msg.metadata.stream}:{msg.metadata.sequence.stream}",
            },
        )

    async def catch_up(self) -> None:
        """Project every stored usage event into DuckDB (exactly once: position is in DuckDB)."""
        async with self._catch_up_lock:
            assert self.projection is not None
            while True:
                position = self.projection.position
                batch = await asyncio.to_thread(self.app.recorded_since, position, 5000)
                if not batch:
                    return
                await self._on_duck(self.projection.apply, batch)

    async def answer(self, msg: Msg) -> None:
        try:
            query = UsageQuery.model_validate_json(msg.data)
            await self.catch_up()
            assert self.projection is not None
            result = await self._on_duck(self.projection.query, query)
            await msg.respond(result.model_dump_json().encode())
        except (ValidationError, ValueError) as exc:
            await msg.respond(error_reply("invalid_query", str(exc)))
        except Exception as exc:
            log.exception("usage query failed")
            await msg.respond(error_reply("internal", f"usage query failed: {exc}"))

    async def close(self) -> None:
        if self.projection is not None:
            await self._on_duck(self.projection.close)
        self.duck.shutdown()


def error_reply(error_type: str, message: str) -> bytes:
    return ErrorReply(error_type=error_type, message=message).model_dump_json().encode()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    app = await asyncio.to_thread(open_store, UsageApplication, settings, "usage")
    nc = await bus.connect(settings, "llmbus-usage")
    service = UsageService(settings, app, nc)
    try:
        await bus.provision(nc.jetstream(), settings)
        await service.start()
        await service.catch_up()
        await service.consume(stop)
    finally:
        await nc.drain()
        await service.close()
        app.close()
