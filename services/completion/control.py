"""Each worker answers for the requests it holds, on its own subject (subjects.worker_subject
of its claim holder's name): what one is doing (status), and stopping it (cancel). The status
and cancel handlers (tracking.py) find the holder through the request's call claim."""

import asyncio
import contextlib
import json
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from llmbus.services.completion.job import Job
from llmbus.shared import subjects
from llmbus.shared.contracts.requests import WorkerAnswer, WorkerAsk

# how long a cancelled call may take to end and be recorded before the answer goes without it
CANCEL_WAIT_S = 10.0


class Control:
    def __init__(self, nc: NatsClient, holder: str, running: dict[str, Job]) -> None:
        self.nc = nc
        self.subject = subjects.worker_subject(holder)
        self.running = running
        self.sub: Subscription | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(self.subject, cb=self._on_ask)

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
        for task in list(self.tasks):
            task.cancel()

    async def _on_ask(self, msg: Msg) -> None:
        try:
            ask = WorkerAsk.model_validate_json(msg.data)
        except ValueError:
            return  # only the completion service may publish here
        job = self.running.get(ask.request_id)
        if job is None:
            await self._answer(msg, WorkerAnswer(held=False))
        elif ask.op == "status":
            await self._answer(msg, status_of(job))
        else:
            # waiting for the call to end must not hold up the asks behind it
            task = asyncio.create_task(self._cancel(msg, job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _cancel(self, msg: Msg, job: Job) -> None:
        job.cancel_requested = True
        if job.calling is not None:
            job.calling.cancel()  # call.py ends the request, charging what was generated
        answer = status_of(job)
        assert job.replied is not None
        with contextlib.suppress(Exception):
            payload = await asyncio.wait_for(asyncio.shield(job.replied), CANCEL_WAIT_S)
            answer.outcome = json.loads(payload)
        await self._answer(msg, answer)

    async def _answer(self, msg: Msg, answer: WorkerAnswer) -> None:
        with contextlib.suppress(Exception):
            await msg.respond(answer.model_dump_json().encode())


def status_of(job: Job) -> WorkerAnswer:
    since = datetime.fromtimestamp(job.taken_at, UTC)
    return WorkerAnswer(held=True, owner=job.client, since=since, model=job.model,
                        attempts=list(job.attempts))  # fmt: skip
