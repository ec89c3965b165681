"""The outbox relay: publishes an event store's notification log to JetStream.

Events and notifications are written in one transaction, so nothing stored can be missed. The
relay tracks how far it has published in the same store. After a crash it republishes from the
last tracked position; every message carries a stable Nats-Msg-Id, so JetStream drops repeats.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Notification, Tracking
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from llmbus.shared import deadletter
from llmbus.shared.deadletter import caused_by_entry, connection
from llmbus.shared.errors import NotReachableError
from llmbus.shared.eventstore import OutboxApplication
from llmbus.shared.subjects import MSG_ID_HEADER

log = logging.getLogger("llmbus.outbox")
T = TypeVar("T")
# A batch's acks normally come within milliseconds. nats-py never resolves the ack of a
# message JetStream answers with an error, and none comes for one lost with a connection: past
# this, the entries not acked are published again one at a time, which raises their error.
ACK_TIMEOUT_S = 5.0


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
        *,
        service: str,
        name: str = "outbox",
        batch_size: int = 500,
        idle_poll_s: float = 0.5,
        track_every_s: float = 0.25,
        on_loop: bool = False,
        topics: Sequence[str] = (),
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.js = js
        self.route = route
        self.service = service  # parks on llmbus.deadletter.<service>
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
        self.ack_timeout_s = ack_timeout_s
        self.position = 0
        self.tracked = 0
        self._tracked_at = 0.0
        self.published = 0
        self.parked = 0
        self._wakeup = asyncio.Event()

    def poke(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.position = await self._call(self._tracked_position)
        while True:
            try:
                moved = await self.publish_pending()
            except (NatsError, NotReachableError, OSError) as exc:
                log.warning("outbox relay %s: %s; retrying", self.name, deadletter.describe(exc))
                moved = 0
                await asyncio.sleep(1.0)
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
        self.published += await self._publish(await self._routed(notifications))
        self.position = notifications[-1].id
        if len(notifications) < self.batch_size:
            self.position = max(self.position, seen_up_to)
        if time.monotonic() - self._tracked_at >= self.track_every_s:
            await self.track()
        return len(notifications)

    async def _routed(self, notifications: list[Notification]) -> list[tuple[int, Outbound]]:
        """The messages of these notifications, with the id of the notification of each; those
        that cannot be made, or would not fit max_payload, are parked."""
        routed = []
        for notification in notifications:
            try:
                outs = list(self.route(self.app.mapper.to_domain_event(notification)))
            except Exception as exc:
                if not caused_by_entry(exc):
                    raise  # e.g. the store read back by a route is down: retry
                await self._park_unroutable(notification, exc)
                continue
            for out in outs:
                headers = {MSG_ID_HEADER: out.msg_id}
                if deadletter.fits(self.js, out.payload, headers):
                    routed.append((notification.id, out))
                    continue
                size = deadletter.message_size(out.payload, headers)
                limit = connection(self.js).max_payload
                why = f"{size} bytes with headers, over the server's max_payload of {limit}"
                await self._park(notification.id, out, deadletter.TOO_LARGE, why)
        return routed

    async def _publish(self, outbound: list[tuple[int, Outbound]]) -> int:
        """Publish a batch and wait for its acks; returns how many were published. An entry
        not acked is published again alone: parked if that is refused for a reason of its
        own, else the error is raised and the batch retried (the entries already stored are
        dropped as repeats by their ids)."""
        if not outbound:
            return 0
        if not connection(self.js).is_connected:
            # nats-py would buffer, or leak an ack slot on a publish it refuses: wait instead
            raise NotReachableError("not connected to NATS")
        acks: list[asyncio.Future[Any]] = []
        try:
            for _, out in outbound:
                headers = {MSG_ID_HEADER: out.msg_id}
                acks.append(await self.js.publish_async(out.subject, out.payload, headers=headers))
            await asyncio.wait(acks, timeout=self.ack_timeout_s)
        finally:
            for ack in acks:
                ack.cancel()  # no-op if acked; else frees the slot nats-py holds for it
        published = 0
        for (notification_id, out), ack in zip(outbound, acks, strict=True):
            if ack.cancelled() or ack.exception() is not None:
                published += await self._publish_alone(notification_id, out)
            else:
                published += 1
        return published

    async def _publish_alone(self, notification_id: int, out: Outbound) -> bool:
        try:
            await self.js.publish(out.subject, out.payload, headers={MSG_ID_HEADER: out.msg_id})
        except Exception as exc:
            if not caused_by_entry(exc):
                raise
            why = deadletter.describe(exc)
            await self._park(notification_id, out, deadletter.error_type(exc), why)
            return False
        return True

    async def _park(self, notification_id: int, out: Outbound, error_type: str, why: str) -> None:
        await deadletter.park(
            self.js, self.service, out.payload, why, error_type, out.subject,
            f"dlq:{out.msg_id}", about={"msg_id": out.msg_id, "notification_id": notification_id},
        )  # fmt: skip
        self.parked += 1

    async def _park_unroutable(self, notification: Notification, exc: Exception) -> None:
        """A stored event route() fails on: no message to park, so a note of which it was."""
        about = {
            "notification_id": notification.id,
            "topic": notification.topic,
            "originator_id": str(notification.originator_id),
            "originator_version": notification.originator_version,
        }
        note = json.dumps(about, separators=(",", ":")).encode()
        await deadletter.park(
            self.js, self.service, note, deadletter.describe(exc), deadletter.UNROUTABLE, None,
            f"dlq:{self.name}:{notification.originator_id}:{notification.originator_version}",
        )  # fmt: skip
        self.parked += 1

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
