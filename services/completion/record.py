"""How a request ended, stored once: the terminal event, and the provider call it paid for.

Then the budget learns the true cost (settle), and the reply goes out.
"""

import logging
from typing import Any

from llmbus.services.completion import metering
from llmbus.services.completion.admission import Admission
from llmbus.services.completion.answer import ModelReply
from llmbus.services.completion.application import Outcome
from llmbus.services.completion.domain import Completion
from llmbus.services.completion.errors import ModelCallFailed
from llmbus.services.completion.job import Job
from llmbus.services.completion.outbox import dumps
from llmbus.services.completion.parse import Rejected
from llmbus.services.completion.prompts import PromptFailed
from llmbus.services.completion.reply import Reply, stored_reply
from llmbus.services.completion.store import CompletionStore
from llmbus.shared.contracts import (
    CompletionFailed,
    CompletionReceived,
    ErrorType,
    TokenUsage,
    UsageRecorded,
)
from llmbus.shared.contracts.budget import BudgetAdmission
from llmbus.shared.routing.router import RoutingError
from llmbus.shared.sections import CompletionSettings

log = logging.getLogger("llmbus.completion")


class Record:
    def __init__(
        self, config: CompletionSettings, store: CompletionStore, admission: Admission, reply: Reply
    ) -> None:
        self.metadata_only = config.privacy == "metadata_only"
        self.store = store
        self.admission = admission
        self.reply = reply

    async def received(self, job: Job, answer: ModelReply) -> None:
        received = CompletionReceived(
            request_id=job.request_id, model=job.model, provider=answer.provider,
            content=answer.content, finish_reason=answer.finish_reason, usage=answer.usage,
            cost_usd=answer.cost_usd, latency_ms=answer.latency_ms, **job.ids(),
        )  # fmt: skip
        usage = self._usage(job, answer.provider, answer.latency_ms, answer.usage, answer.cost_usd,
                            reply=answer)  # fmt: skip
        event = received.model_dump(mode="json")
        payload = dumps(event)
        if self.metadata_only:
            event["content"] = None
        outcome = Outcome(job.request_id, self._request(job), "received", event,
                          usage.model_dump(mode="json"))  # fmt: skip
        completion = await self.store.record(outcome)
        metering.paid(job.model, answer)
        metering.answered(job.model, answer)
        if completion.outcome is not event:
            await self.reply.send(job, stored_reply(completion))  # a racing copy stored first
            return
        metering.ended(job.model)
        await self.admission.settle(usage)
        await self.reply.send(job, payload)

    async def failed(self, job: Job, failed: ModelCallFailed) -> None:
        """A call that failed, charged for what it generated first (a stream cut off or a call
        cancelled: failed.partial), or for nothing."""
        partial = failed.partial
        event = CompletionFailed(
            request_id=job.request_id, error_type=failed.error_type, message=failed.message,
            retryable=failed.retryable, model=job.model, provider=failed.provider,
            usage=partial.usage if partial else None, cost_usd=partial.cost_usd if partial else None,
            **job.ids(),
        )  # fmt: skip
        if partial is None and failed.error_type is ErrorType.cancelled:
            # cancelled before any call: nothing was paid, so there is no UsageRecorded
            await self.reply.send(
                job, stored_reply(await self._store_failed_before_call(job, event))
            )
            return
        usage = self._usage(job, failed.provider or "unknown", failed.latency_ms,
                            partial.usage if partial else None,
                            partial.cost_usd if partial else 0.0,
                            error_type=failed.error_type.value, reply=partial)  # fmt: skip
        outcome = Outcome(job.request_id, self._request(job), "failed",
                          event.model_dump(mode="json"), usage.model_dump(mode="json"))  # fmt: skip
        completion = await self.store.record(outcome)
        if partial is not None:
            metering.paid(job.model, partial)
        if completion.outcome is outcome.event:  # not a racing copy's
            metering.ended(job.model, failed.error_type.value)
        await self.admission.settle(usage)
        await self.reply.send(job, stored_reply(completion))

    def unpaid(self, job: Job, failed: ModelCallFailed) -> UsageRecorded:
        """A failed call another model takes over from: nothing to charge, only to release."""
        return self._usage(job, failed.provider or "unknown", failed.latency_ms,
                           error_type=failed.error_type.value)  # fmt: skip

    async def unroutable(self, job: Job, unroutable: RoutingError) -> None:
        log.warning("request %s: %s", job.request_id, unroutable.error_type.value)
        event = CompletionFailed(
            request_id=job.request_id, error_type=unroutable.error_type,
            message=unroutable.message, retryable=unroutable.retryable, **job.ids(),
        )  # fmt: skip
        await self.reply.send(job, stored_reply(await self._store_failed_before_call(job, event)))

    async def refused(self, job: Job, refusal: BudgetAdmission) -> None:
        event = CompletionFailed(
            request_id=job.request_id,
            error_type=ErrorType.budget_exceeded,
            message=refusal.message or f"refused by budget {refusal.refused_by}",
            retryable=False,
            model=job.model,
            **job.ids(),
        )
        await self.reply.send(job, stored_reply(await self._store_failed_before_call(job, event)))

    async def prompt_failed(self, job: Job, failed: PromptFailed) -> None:
        """No messages to send: ended before any model call, like a rejected request."""
        log.warning("request %s failed: %s", job.request_id, failed.error_type.value)
        event = CompletionFailed(
            request_id=job.request_id,
            error_type=failed.error_type,
            message=failed.message,
            retryable=failed.retryable,
            model=job.model,
            **(job.ids() | {"prompt_version": failed.version}),
        )
        completion = await self._store_failed_before_call(job, event)
        if failed.bad_request:
            rejected = Rejected(failed.error_type, failed.message, job.request_id)
            msg = job.msg
            await self.reply.dead_letter(msg.data, msg.subject, msg.metadata.sequence.stream,
                                         rejected)  # fmt: skip
        await self.reply.send(job, stored_reply(completion))

    async def _store_failed_before_call(self, job: Job, event: CompletionFailed) -> Completion:
        """No provider call was made, so there is no UsageRecorded."""
        outcome = Outcome(job.request_id, self._request(job), "failed",
                          event.model_dump(mode="json"))  # fmt: skip
        completion = await self.store.record(outcome)
        if completion.outcome is outcome.event:  # not a racing copy's
            metering.ended(job.model, event.error_type.value)
        return completion

    def _request(self, job: Job) -> dict[str, Any]:
        return job.stored_request(self.metadata_only)

    def _usage(
        self,
        job: Job,
        provider: str,
        latency_ms: float,
        usage: TokenUsage | None = None,
        cost_usd: float = 0.0,
        error_type: str | None = None,
        reply: ModelReply | None = None,
    ) -> UsageRecorded:
        assert job.claim is not None
        tokens = usage or TokenUsage()
        # one per provider call: a fallback's call is the same claim's next one
        call = f":{len(job.attempts)}" if job.attempts else ""
        return UsageRecorded(
            usage_id=f"{job.request_id}:{job.claim.attempt}{call}",
            request_id=job.request_id,
            provider=provider,
            model=job.model,
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            cached_tokens=tokens.cached_tokens,
            total_tokens=tokens.total_tokens,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            ttft_ms=reply.ttft_ms if reply else None,
            price_version=reply.price_version if reply else None,
            status="error" if error_type else "ok",
            error_type=error_type,
            tags=job.request.tags,
            grant_id=self.admission.grant_of(job.reservation_id or job.request_id),
            reservation_id=job.reservation_id,
            **job.ids(),
        )
