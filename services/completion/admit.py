"""What the request will send (its messages, rendered from a prompt if it names one), and
whether its budgets admit the worst case of that before the call is made."""

from llmbus.services.completion.admission import Admission
from llmbus.services.completion.call import Call
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.job import Job
from llmbus.services.completion.prompts import PromptFailed, PromptResolver
from llmbus.services.completion.record import Record
from llmbus.shared.catalog import ModelCatalog


class Admit:
    def __init__(
        self,
        admission_on: bool,
        catalog: ModelCatalog,
        prompts: PromptResolver,
        admission: Admission,
        heartbeat: Heartbeat,
        call: Call,
        record: Record,
    ) -> None:
        self.admission_on = admission_on
        self.catalog = catalog
        self.prompts = prompts
        self.admission = admission
        self.heartbeat = heartbeat
        self.call = call
        self.record = record

    async def take(self, job: Job) -> None:
        request = job.request
        if request.prompt is not None:
            try:
                job.prompt = await self.heartbeat.during(
                    job.msg, self.prompts.render(request.prompt)
                )
            except PromptFailed as failed:
                await self.record.prompt_failed(job, failed)
                return
            job.messages = job.prompt.messages
        else:
            assert request.messages is not None
            job.messages = [m.model_dump() for m in request.messages]
        job.params = request.params.model_dump(exclude_none=True)
        if self.admission_on:
            # the call is capped at the reply length the reservation paid for: a hard bound
            max_tokens = self.catalog.reply_cap(job.model, request.params.max_tokens)
            job.params["max_tokens"] = max_tokens
            # a reservation may wait for room: keep JetStream from redelivering meanwhile
            admitting = self.admission.admit(request, job.model, job.messages, max_tokens)
            refusal = await self.heartbeat.during(job.msg, admitting)
            if refusal is not None:
                await self.record.refused(job, refusal)
                return
        await self.call.take(job)
