"""The budget events the dashboards listen to: one NATS subscription per gateway process, to
BudgetThresholdReached and BudgetExceeded as the usage service publishes them, handed to every
open dashboard. Core NATS, not a JetStream consumer: a dashboard wants what happens from now on,
and reads the budgets' status afresh on each event."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from llmbus.client.budgets import BudgetEvent, read_event
from llmbus.shared import subjects

log = logging.getLogger("llmbus.gateway")
# events a slow dashboard may fall behind by; it misses the oldest, then reads the status anyway
BACKLOG = 64


class BudgetFeed:
    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[BudgetEvent]] = set()
        self._subs: list[Subscription] = []
        self._subscribing = asyncio.Lock()  # two dashboards opened at once subscribe once

    @contextlib.asynccontextmanager
    async def listening(self, nc: NatsClient) -> AsyncIterator["asyncio.Queue[BudgetEvent]"]:
        """The budget events from now on, for as long as the caller listens."""
        async with self._subscribing:
            if not self._subs:  # the first dashboard's: kept until the gateway stops
                for subject in subjects.ADMIN_EVENT_SUBJECTS:
                    self._subs.append(await nc.subscribe(subject, cb=self._on_event))
        queue: asyncio.Queue[BudgetEvent] = asyncio.Queue(BACKLOG)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = read_event(msg.subject, msg.data)
        except ValidationError:
            log.warning("ignoring a malformed budget event on %s", msg.subject)
            return
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await sub.unsubscribe()
