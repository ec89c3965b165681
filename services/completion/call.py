"""The model call, made once the request holds a claim and its budget admitted it.

A failure that another model of the request's role may still answer (rate limits, timeouts,
5xx, a context window too small, a rejected key) is handed back to admit, which tries the next;
any other failure, or one of the last model, ends the request here.
"""

from llmbus.services.completion.errors import ModelCallFailed
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.job import Job
from llmbus.services.completion.record import Record
from llmbus.shared.contracts.completion import ErrorType

FALLS_THROUGH = frozenset(
    {
        ErrorType.rate_limited, ErrorType.provider_error, ErrorType.timeout,
        ErrorType.context_window_exceeded, ErrorType.authentication, ErrorType.unknown_model,
    }
)  # fmt: skip


class Call:
    def __init__(
        self, gateway: ModelGateway, heartbeat: Heartbeat, record: Record, cooldown_s: float
    ) -> None:
        self.gateway = gateway
        self.heartbeat = heartbeat
        self.record = record
        self.cooldown_s = cooldown_s

    async def take(self, job: Job, last: bool = True) -> ModelCallFailed | None:
        """Call job.model. None: the request ended and is recorded. A failure the next model
        may answer is returned instead, unrecorded, unless this is the last model."""
        calling = self.gateway.complete(job.model, job.messages, job.params, job.base_params)
        try:
            answer = await self.heartbeat.during(job.msg, calling)
        except ModelCallFailed as failed:
            self.learn(job.model, failed)
            if last or failed.error_type not in FALLS_THROUGH:
                await self.record.failed(job, failed)
                return None
            return failed
        await self.record.received(job, answer)
        return None

    def learn(self, model: str, failed: ModelCallFailed) -> None:
        """What every later request of this worker should know about the model."""
        health = self.gateway.health
        if failed.error_type is ErrorType.rate_limited:
            # a Retry-After of a few ms lets one retry through; the model still gets a rest
            health.cool_down(model, max(failed.retry_after_s or 0.0, self.cooldown_s))
        elif failed.error_type is ErrorType.authentication:
            health.mark_unhealthy(model, "credentials rejected")
