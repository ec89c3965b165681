"""The model call, made once the request holds a claim and its budget admitted it: whole, or
streamed chunk by chunk (streaming.py) when the request asks for `stream`.

A failure that another model of the request's role may still answer (rate limits, timeouts,
5xx, a context window too small, a rejected key) is handed back to admit, which tries the next;
any other failure, one of the last model, or a stream that broke off after its first delta ends
the request here. So does a cancel (see control.py): the call is stopped, and what it generated
so far is charged.
"""

import asyncio
import time

from nats.aio.client import Client as NatsClient

from llmbus.services.completion.answer import ModelReply
from llmbus.services.completion.chunks import Chunks
from llmbus.services.completion.errors import ModelCallFailed, cancelled
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.job import Job
from llmbus.services.completion.record import Record
from llmbus.services.completion.streaming import Streamed, cut_short, stream
from llmbus.shared.contracts.completion import ErrorType

FALLS_THROUGH = frozenset(
    {
        ErrorType.rate_limited, ErrorType.provider_error, ErrorType.timeout,
        ErrorType.context_window_exceeded, ErrorType.authentication, ErrorType.unknown_model,
    }
)  # fmt: skip


class Call:
    def __init__(
        self, gateway: ModelGateway, heartbeat: Heartbeat, record: Record, cooldown_s: float,
        nc: NatsClient,
    ) -> None:  # fmt: skip
        self.gateway = gateway
        self.heartbeat = heartbeat
        self.record = record
        self.cooldown_s = cooldown_s
        self.nc = nc

    async def take(self, job: Job, last: bool = True) -> ModelCallFailed | None:
        """Call job.model. None: the request ended and is recorded. A failure the next model
        may answer is returned instead, unrecorded, unless this is the last model."""
        if job.cancel_requested:  # while it was being admitted
            await self.record.failed(job, cancelled(None))
            return None
        job.calling = calling = asyncio.ensure_future(self._calling(job))
        job.call_started = time.perf_counter()
        try:
            answer = await self.heartbeat.during(job.msg, calling)
        except ModelCallFailed as failed:
            self.learn(job.model, failed)
            if last or failed.error_type not in FALLS_THROUGH or cut_short(failed):
                await self._end(job, failed)
                return None
            return failed
        except asyncio.CancelledError:
            if not job.cancel_requested or not calling.cancelled():
                raise  # the worker is stopping: the request is redelivered
            await self._end(job, cancelled(self._so_far(job)))
            return None
        finally:
            job.calling = None
        await self.record.received(job, answer)
        return None

    async def _calling(self, job: Job) -> ModelReply:
        if not job.request.stream:
            return await self.gateway.complete(job.model, job.messages, job.params,
                                               job.base_params)  # fmt: skip
        assert job.claim is not None
        job.chunks = chunks = Chunks(self.nc, job.request_id, job.client, job.claim.attempt)
        job.streamed = streamed = Streamed(self.gateway, job.model, job.messages)
        reply = await stream(self.gateway, streamed, job.params, job.base_params, chunks.delta)
        await chunks.final(reply)
        return reply

    async def _end(self, job: Job, failed: ModelCallFailed) -> None:
        if failed.partial is not None and job.chunks is not None:
            await job.chunks.final(failed.partial, failed.error_type.value)
        await self.record.failed(job, failed)

    def _so_far(self, job: Job) -> ModelReply:
        """What a cancelled call generated: a stream's chunks so far; a whole call, its prompt
        (the provider has read it, and no reply came)."""
        if job.streamed is not None:
            return job.streamed.settle()
        return Streamed(self.gateway, job.model, job.messages, started=job.call_started).settle()

    def learn(self, model: str, failed: ModelCallFailed) -> None:
        """What every later request of this worker should know about the model."""
        health = self.gateway.health
        if failed.error_type is ErrorType.rate_limited:
            # a Retry-After of a few ms lets one retry through; the model still gets a rest
            health.cool_down(model, max(failed.retry_after_s or 0.0, self.cooldown_s))
        elif failed.error_type is ErrorType.authentication:
            health.mark_unhealthy(model, "credentials rejected")
