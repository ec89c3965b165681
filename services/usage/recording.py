"""Recording the UsageRecorded events the usage service fetches: each is stored with its
budget settlements, or parked on llmbus.deadletter.usage with why it cannot be.

A parked event is acked like a stored one, so it never holds up those behind it. Only an
event's own fault parks it (see shared/deadletter.py): a store that is down fails the batch,
which JetStream redelivers.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from llmbus.services.usage.application import BudgetBook, UsageApplication
from llmbus.services.usage.domain import BudgetError
from llmbus.services.usage.recordable import Unrecordable, out_of_bounds
from llmbus.shared import deadletter, subjects
from llmbus.shared.contracts import UsageRecorded

# a store write on the loop holds up admission: a chunk of 100 takes ~5 ms on SQLite (25: ~2 ms)
RECORD_CHUNK = 100
SERVICE = "usage"
RunOnStore = Callable[..., Awaitable[Any]]


class UsageRecording:
    def __init__(
        self, app: UsageApplication, book: BudgetBook, js: JetStreamContext, on_store: RunOnStore
    ) -> None:
        self.app = app
        self.book = book
        self.js = js
        self.on_store = on_store

    async def record(self, msgs: list[Msg]) -> None:
        """Store the events of `msgs` not stored yet, a chunk at a time, and park those that
        cannot be stored. Acks nothing: the caller acks them all once this returns."""
        events: list[tuple[Msg, UsageRecorded]] = []
        for msg in msgs:
            try:
                event = UsageRecorded.model_validate_json(msg.data)
            except ValidationError as exc:
                await self.park(msg, deadletter.INVALID_EVENT, deadletter.describe(exc))
                continue
            beyond = out_of_bounds(event)
            if beyond is not None:
                await self.park(msg, deadletter.UNRECORDABLE, beyond)
            else:
                events.append((msg, event))
        for start in range(0, len(events), RECORD_CHUNK):
            await self._record_chunk(events[start : start + RECORD_CHUNK])
            await asyncio.sleep(0)  # let admission in between chunks

    async def _record_chunk(self, chunk: list[tuple[Msg, UsageRecorded]]) -> None:
        try:
            await self.on_store(self.app.record, [event for _, event in chunk], self.book)
        except Exception as exc:
            if not caused_by_event(exc):
                raise
            # one event the store or a budget cannot take: find it, one at a time
            for msg, event in chunk:
                try:
                    await self.on_store(self.app.record, [event], self.book)
                except Exception as one:
                    if not caused_by_event(one):
                        raise
                    await self.park(msg, deadletter.UNRECORDABLE, deadletter.describe(one))

    async def park(self, msg: Msg, error_type: str, reason: str) -> None:
        await deadletter.park(
            self.js, SERVICE, msg.data, reason, error_type, msg.subject,
            f"dlq:{msg.metadata.stream}:{msg.metadata.sequence.stream}",
        )  # fmt: skip

    async def park_stored(self, position: int, event: Unrecordable) -> None:
        """A stored event the projection skipped (stored before its bounds were checked)."""
        payload = json.dumps(event.usage, separators=(",", ":")).encode()
        await deadletter.park(
            self.js, SERVICE, payload, event.reason, deadletter.UNRECORDABLE,
            subjects.USAGE_RECORDED, f"dlq:usage-store:{position}",
            about={"usage_id": event.usage_id, "position": position},
        )  # fmt: skip


def caused_by_event(exc: BaseException) -> bool:
    return deadletter.caused_by_entry(exc, BudgetError)
