"""Consumes llmbus.completion.requested: fetches as many requests as there are free slots, keeps
them alive while they run, and puts each on the line:

    intake -> claim -> admit -> call -> record -> reply

(intake.py, claim.py, admit.py, call.py, record.py, reply.py), each step handing the job on.
"""

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from llmbus.services.completion.admission import Admission, AdmissionUnavailableError
from llmbus.services.completion.admit import Admit
from llmbus.services.completion.application import CompletionApplication
from llmbus.services.completion.call import Call
from llmbus.services.completion.claim import Claim
from llmbus.services.completion.control import Control
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.given_up import GivenUp
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.intake import Intake
from llmbus.services.completion.prompts import PromptResolver
from llmbus.services.completion.record import Record
from llmbus.services.completion.reply import Reply, reply_subject
from llmbus.services.completion.store import CompletionStore
from llmbus.shared import bus, consuming, metrics, subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.eventstore import SQLiteProbe
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.routing.router import Router
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.completion")

FETCH_BATCH = 64
IDLE_WAIT_S = 0.5  # a pull for one request: how often an idle worker asks again
BATCH_WAIT_S = 0.005  # a pull for a batch, when requests were queued but others took them


class CompletionWorker:
    def __init__(
        self,
        settings: Settings,
        app: CompletionApplication,
        gateway: ModelGateway,
        nc: NatsClient,
        relay: OutboxRelay,
        probe: SQLiteProbe | None = None,
    ) -> None:
        config = settings.completion
        self.concurrency = config.concurrency
        self.nc = nc
        self.store = CompletionStore(app, probe)
        self.prompts = PromptResolver(nc, redact=config.privacy == "metadata_only")
        self.admission = Admission(settings, gateway.catalog, nc)
        self.heartbeat = Heartbeat(config.ack_wait_s)
        self.reply = Reply(config, nc, self.store, relay)
        record = Record(config, self.store, self.admission, self.reply)
        call = Call(gateway, self.heartbeat, record, config.cooldown_s, nc)
        self.router = router = Router(settings, gateway.catalog, gateway.health)
        admit = Admit(settings.admission_on, router, self.prompts, self.admission,
                      self.heartbeat, call, record)  # fmt: skip
        self.claim = Claim(config.claim_lease_s, self.store, self.admission, self.heartbeat,
                           admit, self.reply)  # fmt: skip
        self.intake = Intake(config, nc, router, self.claim, self.reply,
                             ClientDirectory(nc.jetstream()))  # fmt: skip
        self.given_up = GivenUp(nc.jetstream(), self.store, self.reply)
        self.control = Control(nc, self.admission.holder, self.claim.running)
        self.tasks: set[asyncio.Task[None]] = set()
        # read when scraped: nothing to count on the request's path
        metrics.IN_FLIGHT("completion").set_function(lambda: len(self.tasks))

    async def run(self, stop: asyncio.Event) -> None:
        await self.prompts.watch()  # before the first request: no change may go unseen
        await self.admission.start()  # likewise for budget changes
        await self.control.start()
        sub = await self.nc.jetstream().pull_subscribe_bind(
            durable=subjects.COMPLETION_CONSUMER, stream=subjects.REQUESTS_STREAM
        )
        watching = asyncio.create_task(self.given_up.watch(stop))
        background = [asyncio.create_task(self.heartbeat.run()),
                      asyncio.create_task(self.claim.renew())]  # fmt: skip
        granting_stop = asyncio.Event()
        granting = asyncio.create_task(self.admission.run(granting_stop))
        log.info("completion worker ready (concurrency %d)", self.concurrency)
        try:
            await self._fetch(sub, stop)
        finally:
            if self.tasks:
                log.info("draining %d in-flight requests", len(self.tasks))
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await watching
            await self.control.stop()
            for task in background:
                task.cancel()
            granting_stop.set()
            await granting
            await self.admission.close()
            self.store.close()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await self.prompts.close()

    async def _fetch(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        """Only as many messages as there are free slots: a fetched message waits for no one.

        A pull for one request is answered the moment one arrives. A pull for a batch returns
        at once with what is queued, but one left waiting holds the first request to arrive
        until the rest of its batch does, or it expires (nats-py's fetch): so a batch is asked
        for only when the last request fetched said more were queued behind it."""
        backoff = bus.Backoff("fetching completion requests")
        queued = False
        while not stop.is_set():
            free = self.concurrency - len(self.tasks)
            if free <= 0:
                await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            if queued:
                msgs = await consuming.fetch(sub, min(free, FETCH_BATCH), BATCH_WAIT_S, backoff)
            else:
                msgs = await consuming.fetch(sub, 1, IDLE_WAIT_S, backoff)
            queued = bool(msgs) and msgs[-1].metadata.num_pending > 0
            for msg in msgs:
                task = asyncio.create_task(self.handle(msg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def handle(self, msg: Msg) -> None:
        reply_to = reply_subject(msg.headers, subjects.client_of(msg.subject))
        try:
            await self.intake.take(msg, reply_to)
        except AdmissionUnavailableError as exc:
            log.warning("%s; request will be redelivered", exc)
            await self.reply.retry_later(msg, reply_to)
        except Exception:
            log.exception("request handling failed; it will be redelivered")
            await self.reply.retry_later(msg, reply_to)
