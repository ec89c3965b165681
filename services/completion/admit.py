"""What the request will send (its messages, rendered from a prompt if it names one), which
models may answer it (routing), and whether its budgets admit the worst case of each before it
is called. A model that fails in a way the next may answer hands over to the next: its
reservation is released and the next model reserves at its own price."""

import hashlib

from llmbus.services.completion.admission import Admission
from llmbus.services.completion.call import Call
from llmbus.services.completion.errors import cancelled
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.job import Job
from llmbus.services.completion.prompts import PromptFailed, PromptResolver
from llmbus.services.completion.record import Record
from llmbus.shared.contracts.budget import BudgetAdmission
from llmbus.shared.contracts.completion import Attempt
from llmbus.shared.routing.router import Router, RoutingError, no_capable_model

MAX_REQUEST_ID = 128  # contracts.base.RequestId


class Admit:
    def __init__(
        self,
        admission_on: bool,
        router: Router,
        prompts: PromptResolver,
        admission: Admission,
        heartbeat: Heartbeat,
        call: Call,
        record: Record,
    ) -> None:
        self.admission_on = admission_on
        self.router = router
        self.prompts = prompts
        self.admission = admission
        self.heartbeat = heartbeat
        self.call = call
        self.record = record

    async def take(self, job: Job) -> None:
        if job.cancel_requested:  # before any call: it ends with nothing to charge
            await self.record.failed(job, cancelled(None))
            return
        if not await self._messages(job):
            return
        assert job.plan is not None
        asked = job.request.params.model_dump(exclude_none=True)
        try:
            choice = self.router.choose(job.plan, job.messages, asked)
        except RoutingError as unroutable:
            await self.record.unroutable(job, unroutable)
            return
        excluded = dict(choice.excluded)
        for n, model in enumerate(choice.models):
            job.model, job.params = model, dict(asked)
            job.base_params = self.router.base_params(job.plan, model)
            job.reservation_id = fallback_reservation(job.request_id, n) if n else None
            last = n == len(choice.models) - 1
            # a cheaper candidate does not wait for room: the next one may pay at once
            wait = last or job.plan.strategy != "cheapest-capable"
            refusal = await self._admit(job, wait) if self.admission_on else None
            if refusal is not None:
                if job.plan.strategy != "cheapest-capable":
                    await self.record.refused(job, refusal)
                    return
                excluded[model] = refusal.message or f"budget {refusal.refused_by} refused it"
                continue
            failed = await self.call.take(job, last)
            if failed is None:
                return
            await self.admission.settle(self.record.unpaid(job, failed))  # frees its reservation
            job.attempts.append(Attempt(model=model, error_type=failed.error_type))
        await self.record.unroutable(job, no_capable_model(job.plan, excluded))

    async def _messages(self, job: Job) -> bool:
        request = job.request
        if request.prompt is None:
            assert request.messages is not None
            job.messages = [m.model_dump() for m in request.messages]
            return True
        try:
            job.prompt = await self.heartbeat.during(job.msg, self.prompts.render(request.prompt))
        except PromptFailed as failed:
            await self.record.prompt_failed(job, failed)
            return False
        job.messages = job.prompt.messages
        return True

    async def _admit(self, job: Job, wait: bool) -> BudgetAdmission | None:
        assert job.plan is not None
        catalog = self.router.catalog
        # the call is capped at the reply length the reservation paid for: a hard bound
        max_tokens = catalog.reply_cap(job.model, self.router.max_tokens(job.plan, job.model,
                                                                         job.params))  # fmt: skip
        job.params["max_tokens"] = max_tokens
        # a reservation may wait for room: keep JetStream from redelivering meanwhile
        admitting = self.admission.admit(job.request, job.model, job.messages, max_tokens,
                                         job.reservation_id, job.role, wait)  # fmt: skip
        return await self.heartbeat.during(job.msg, admitting)


def fallback_reservation(request_id: str, n: int) -> str:
    """The reservation id of the request's n-th model: a request id too (same pattern, at most
    128 characters), the same on every delivery, so that a redelivery reserves nothing twice."""
    suffix = f":fallback-{n}"
    if len(request_id) + len(suffix) <= MAX_REQUEST_ID:
        return request_id + suffix
    return hashlib.sha256(request_id.encode()).hexdigest() + suffix
