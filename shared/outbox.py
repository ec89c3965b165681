"""The outbox relay: publishes an event store's notification log to JetStream.

Events and notifications are written in one transaction, so nothing stored can be missed. The
relay tracks how far it has published in the same store. After a crash it republishes from the
last tracked position; every message carries a stable Nats-Msg-Id, so JetStream drops repeats.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Notification, Tracking
from nats.js import JetStreamContext

from llmbus.shared.eventstore import OutboxApplication
from llmbus.shared.subjects import MSG_ID_HEADER

log = logging.getLogger("llmbus.outbox")
T = TypeVar("T")


@dataclass(frozen=True)
class Outbound:
    subject: str
    payload: bytes
    msg_id: str


Route = Callable[[DomainEventProtocol[Any]], Iterable[Outbound]]


class OutboxRelay:
    def __init__(
        self,
        app: OutboxApplication,
        js: JetStreamContext,
        route: Route,
        name: str = "outbox",
        batch_size: int = 500,
        idle_poll_s: float = 0.5,
        track_every_s: float = 0.25,
        on_loop: bool = False,
        topics: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.js = js
        self.route = route
        self.name = name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        # tracking is a write per cycle; a lagging position only means a few repeats after a
        # crash, and JetStream drops those by their Nats-Msg-Id
        self.track_every_s = track_every_s
        # on_loop: a local SQLite read or write (~0.1 ms) costs less than a thread hop
        self.on_loop = on_loop
        # only these event topics can become messages: the others are not even read
        self.topics = list(topics)
        self.position = 0
        self.tracked = 0
        self._tracked_at = 0.0
        self.published = 0
        self._wakeup = asyncio.Event()

    def poke(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.position = await self._call(self._tracked_position)
        while True:
            try:
                moved = await self.publish_pending()
            except Exception:
                log.exception("outbox relay %s failed; retrying", self.name)
                moved = 0
                await asyncio.sleep(1.0)  # back off from a broken broker connection
            if moved:
                continue
            if stop.is_set():
                await self.track()
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.idle_poll_s)
            except TimeoutError:
                pass  # the poll catches events stored by other processes sharing this store

    async def publish_pending(self) -> int:
        """Publish one batch past the tracked position; returns how many notifications moved."""
        notifications, seen_up_to = await self._call(self._select)
        if not notifications:
            if seen_up_to > self.position:  # nothing to publish up to there: skip it for good
                self.position = seen_up_to
                if time.monotonic() - self._tracked_at >= self.track_every_s:
                    await self.track()
            return 0
        acks = []
        for notification in notifications:
            for out in self.route(self.app.mapper.to_domain_event(notification)):
                acks.append(
                    await self.js.publish_async(
                        out.subject, out.payload, headers={MSG_ID_HEADER: out.msg_id}
                    )
                )
        await asyncio.gather(*acks)
        self.published += len(acks)
        self.position = notifications[-1].id
        if len(notifications) < self.batch_size:
            self.position = max(self.position, seen_up_to)
        if time.monotonic() - self._tracked_at >= self.track_every_s:
            await self.track()
        return len(notifications)

    async def drain(self) -> None:
        while await self.publish_pending():
            pass
        await self.track()

    async def track(self) -> None:
        if self.position > self.tracked:
            await self._call(self._track, self.position)
            self.tracked = self.position
        self._tracked_at = time.monotonic()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args) if self.on_loop else await asyncio.to_thread(fn, *args)

    def _select(self) -> tuple[list[Notification], int]:
        """The next batch, and how far it has looked. Filtered by topic, a short batch means
        nothing else up to the store's last committed notification, which was read first (the
        recorders commit notification ids in order), so the next select starts from there."""
        recorder = self.app.process_recorder
        ceiling = (recorder.max_notification_id() or 0) if self.topics else None
        notifications = list(
            recorder.select_notifications(
                self.position, self.batch_size, stop=ceiling, topics=self.topics,
                inclusive_of_start=False,
            )
        )  # fmt: skip
        return notifications, ceiling or 0

    def _tracked_position(self) -> int:
        return self.app.process_recorder.max_tracking_id(self.name) or 0

    def _track(self, position: int) -> None:
        try:
            self.app.process_recorder.insert_tracking(Tracking(self.name, position))
        except IntegrityError:
            # another relay on the same store got further; carry on from there.
            self.position = max(position, self._tracked_position())
