"""The model call, made once the request holds a claim and its budget admitted it."""

from llmbus.services.completion.errors import ModelCallFailed
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.job import Job
from llmbus.services.completion.record import Record


class Call:
    def __init__(self, gateway: ModelGateway, heartbeat: Heartbeat, record: Record) -> None:
        self.gateway = gateway
        self.heartbeat = heartbeat
        self.record = record

    async def take(self, job: Job) -> None:
        calling = self.gateway.complete(job.model, job.messages, job.params)
        try:
            answer = await self.heartbeat.during(job.msg, calling)
        except ModelCallFailed as failed:
            await self.record.failed(job, failed)
            return
        await self.record.received(job, answer)
