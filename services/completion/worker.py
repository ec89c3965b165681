"""Consumes llmbus.completion.requested: calls the model once per request_id, stores, replies."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from llmbus.services.completion.admission import Admission, AdmissionUnavailableError
from llmbus.services.completion.application import ClaimAnswer, CompletionApplication, Outcome
from llmbus.services.completion.domain import CallClaim, Completion
from llmbus.services.completion.errors import ModelCallFailed
from llmbus.services.completion.gateway import ModelGateway, ModelReply
from llmbus.services.completion.intake import Rejected, parse_request, salvage_request_id
from llmbus.services.completion.outbox import dumps
from llmbus.services.completion.prompts import PromptFailed, PromptResolver, RenderedPrompt
from llmbus.shared import bus, subjects
from llmbus.shared.batching import GroupCommit
from llmbus.shared.catalog import UnknownModelError
from llmbus.shared.contracts import (
    CompletionFailed,
    CompletionReceived,
    CompletionRequested,
    ErrorType,
    UsageRecorded,
)
from llmbus.shared.contracts.budget import BudgetAdmission
from llmbus.shared.eventstore import SQLiteProbe
from llmbus.shared.limits import Limits, header_bytes, header_text
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.completion")
T = TypeVar("T")


FETCH_BATCH = 64
# how often a worker that found a request claimed by another looks for its outcome (or lapse)
CLAIM_POLL_S = 0.5
# a CompletionFailed's message, when a request is refused (the event must stay small)
MAX_REASON_CHARS = 2000


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
        self.settings = settings
        self.config = settings.completion
        self.app = app
        self.gateway = gateway
        self.nc = nc
        self.js = nc.jetstream()
        self.relay = relay
        self.prompts = PromptResolver(nc, redact=self.config.privacy == "metadata_only")
        self.catalog = gateway.catalog
        self.admission = Admission(settings, gateway.catalog, nc)
        self.tasks: set[asyncio.Task[None]] = set()
        # duplicates delivered to this process while the first copy is still at the model
        self.inflight: dict[str, asyncio.Future[bytes]] = {}
        self.at_model: dict[int, tuple[Msg, float]] = {}
        self.probe = probe
        # this worker's claims on the requests it is calling a model for, renewed while they run
        self.claims: dict[str, CallClaim] = {}
        self.claim_lease_s = self.config.claim_lease_s
        # local SQLite writes take ~0.15 ms: cheaper on the loop than any hop or wait; a
        # network store writes concurrent outcomes together on a thread of its own
        self.writes: GroupCommit[Outcome, Completion] | None = None
        self.claiming: GroupCommit[tuple[str, str, float, float], ClaimAnswer] | None = None
        if probe is None:
            self.writes = GroupCommit(app.record_many, "completion-store")
            self.claiming = GroupCommit(app.claim_many, "completion-claims")

    async def run(self, stop: asyncio.Event) -> None:
        await self.prompts.watch()  # before the first request: no change may go unseen
        await self.admission.start()  # likewise for budget changes
        sub = await self.js.pull_subscribe_bind(
            durable=subjects.COMPLETION_CONSUMER, stream=subjects.REQUESTS_STREAM
        )
        watching = asyncio.create_task(self.watch_given_up(stop))
        beating = asyncio.create_task(self.heartbeat())
        renewing = asyncio.create_task(self.renew_claims())
        granting_stop = asyncio.Event()
        granting = asyncio.create_task(self.admission.run(granting_stop))
        log.info("completion worker ready (concurrency %d)", self.config.concurrency)
        backoff = bus.Backoff("fetching completion requests")
        try:
            while not stop.is_set():
                free = self.config.concurrency - len(self.tasks)
                if free <= 0:
                    await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                msgs = await bus.fetch(sub, min(free, FETCH_BATCH), 0.5, backoff)
                for msg in msgs:
                    task = asyncio.create_task(self.handle(msg))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        finally:
            if self.tasks:
                log.info("draining %d in-flight requests", len(self.tasks))
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await watching
            beating.cancel()
            renewing.cancel()
            granting_stop.set()
            await granting
            await self.admission.close()
            for commits in (self.writes, self.claiming):
                if commits is not None:
                    commits.close()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await self.prompts.close()

    async def handle(self, msg: Msg) -> None:
        reply_to = reply_subject(msg.headers)
        try:
            try:
                limits = Limits(self.config.max_request_bytes, self.nc.max_payload)
                request = parse_request(msg.data, limits)
                model = self._target_model(request)
            except Rejected as rejected:
                await self._reject(msg, rejected, reply_to)
                return
            reply = await self._complete_once(request, model, msg)
            await self._reply(reply_to, reply)
            await msg.ack()
            self.relay.poke()  # after the reply: the caller waits on it, not on the events
        except AdmissionUnavailableError as exc:
            log.warning("%s; request will be redelivered", exc)
            await self._retry_later(msg, reply_to)
        except Exception:
            log.exception("request handling failed; it will be redelivered")
            await self._retry_later(msg, reply_to)

    def _target_model(self, request: CompletionRequested) -> str:
        if request.role is not None:
            raise Rejected(
                ErrorType.invalid_request,
                f"no role named {request.role!r} is configured; name a model instead",
                request.request_id,
            )
        assert request.model is not None
        try:
            self.catalog.resolve(request.model)
        except UnknownModelError as failed:
            raise Rejected(failed.error_type, failed.message, request.request_id) from None
        return request.model

    async def _complete_once(self, request: CompletionRequested, model: str, msg: Msg) -> bytes:
        running = self.inflight.get(request.request_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.inflight[request.request_id] = future
        try:
            reply = await self._complete(request, model, msg)
            future.set_result(reply)
            return reply
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: a duplicate may never await it
            raise
        finally:
            del self.inflight[request.request_id]
            self.admission.abandon(request.request_id)  # if it ended without settling

    async def _complete(self, request: CompletionRequested, model: str, msg: Msg) -> bytes:
        stored = await self._stored(request.request_id)
        if stored is not None and stored.is_terminal:
            return self._stored_reply(stored)
        claimed = await self._claim(request.request_id, msg)
        if isinstance(claimed, Completion):
            return self._stored_reply(claimed)  # another worker's call ended meanwhile
        try:
            return await self._call(request, model, msg)
        finally:
            del self.claims[request.request_id]

    async def _claim(self, request_id: str, msg: Msg) -> CallClaim | Completion:
        """This worker's claim to call the model, or the outcome of another worker's call.

        JetStream redelivers a request whose worker seems silent, also while that worker is
        still at the model (a busy machine's heartbeat came late): the claim, not the delivery,
        decides who calls. A request claimed by a live worker waits here for that outcome."""
        while True:
            answer = await self._claim_once(request_id)
            if answer.mine is not None:
                self.claims[request_id] = answer.mine
                return answer.mine
            if answer.ended is not None:
                return answer.ended
            assert answer.held_by is not None
            lapses_in = answer.held_by.lease_until - time.time()
            pause = min(CLAIM_POLL_S, max(lapses_in, 0.0) + 0.01)
            await self._while_in_progress(msg, asyncio.sleep(pause))
            stored = await self._stored(request_id)
            if stored is not None and stored.is_terminal:
                return stored

    async def _claim_once(self, request_id: str) -> ClaimAnswer:
        ask = (request_id, self.admission.holder, time.time(), self.claim_lease_s)
        if self.claiming is None:
            return self.app.claim(*ask)  # local SQLite: cheaper on the loop than a thread hop
        return await self.claiming.write(ask)

    async def renew_claims(self) -> None:
        """Renew the claims of calls still running, well before their leases lapse."""
        every = self.claim_lease_s / 3
        while True:
            await asyncio.sleep(every)
            now = time.time()
            due = [c for c in self.claims.values() if c.lease_until - now < 2 * every]
            if not due:
                continue
            try:
                if self.claiming is None:
                    self.app.renew(due, now, self.claim_lease_s)
                else:
                    await asyncio.to_thread(self.app.renew, due, now, self.claim_lease_s)
            except Exception:
                log.exception("could not renew %d claims; retrying", len(due))

    async def _call(self, request: CompletionRequested, model: str, msg: Msg) -> bytes:
        prompt: RenderedPrompt | None = None
        if request.prompt is not None:
            try:
                prompt = await self._while_in_progress(msg, self.prompts.render(request.prompt))
            except PromptFailed as failed:
                return await self._record_prompt_failure(request, model, failed, msg)
            messages = prompt.messages
        else:
            assert request.messages is not None
            messages = [m.model_dump() for m in request.messages]
        params = request.params.model_dump(exclude_none=True)
        if self.settings.admission_on:
            # the call is capped at the reply length the reservation paid for: a hard bound
            params["max_tokens"] = self.catalog.reply_cap(model, request.params.max_tokens)
            # a reservation may wait for room: keep JetStream from redelivering meanwhile
            admitting = self.admission.admit(request, model, messages, params["max_tokens"])
            refusal = await self._while_in_progress(msg, admitting)
            if refusal is not None:
                return await self._record_refusal(request, model, refusal, prompt)
        try:
            reply = await self._while_in_progress(
                msg, self.gateway.complete(model, messages, params)
            )
        except ModelCallFailed as failed:
            return await self._record_failure(request, model, failed, prompt)
        return await self._record_success(request, model, reply, prompt)

    async def _record_refusal(
        self,
        request: CompletionRequested,
        model: str,
        refusal: BudgetAdmission,
        prompt: RenderedPrompt | None,
    ) -> bytes:
        event = CompletionFailed(
            request_id=request.request_id,
            error_type=ErrorType.budget_exceeded,
            message=refusal.message or f"refused by budget {refusal.refused_by}",
            retryable=False,
            model=model,
            **self._ids(request, prompt),
        )
        return self._stored_reply(await self._record_failed_before_call(request, event))

    async def _record_prompt_failure(
        self, request: CompletionRequested, model: str, failed: PromptFailed, msg: Msg
    ) -> bytes:
        """No messages to send: ended before any model call, like a rejected request."""
        log.warning("request %s failed: %s", request.request_id, failed.error_type.value)
        event = CompletionFailed(
            request_id=request.request_id,
            error_type=failed.error_type,
            message=failed.message,
            retryable=failed.retryable,
            model=model,
            **(self._ids(request) | {"prompt_version": failed.version}),
        )
        completion = await self._record_failed_before_call(request, event)
        if failed.bad_request:
            rejected = Rejected(failed.error_type, failed.message, request.request_id)
            await self._dead_letter(msg.data, msg.subject, msg.metadata.sequence.stream, rejected)
        return self._stored_reply(completion)

    async def _record_failed_before_call(
        self, request: CompletionRequested, event: CompletionFailed
    ) -> Completion:
        """A request that ends with no model call: no provider call, so no UsageRecorded."""
        outcome = Outcome(request.request_id, self._stored_request(request), "failed",
                          event.model_dump(mode="json"))  # fmt: skip
        return await self._record(outcome)

    async def _stored(self, request_id: str) -> Completion | None:
        if self.probe is not None and not self.probe.has_events(Completion.create_id(request_id)):
            return None  # the common case, answered without leaving the event loop
        return await asyncio.to_thread(self.app.find, request_id)

    async def _record(self, outcome: Outcome) -> Completion:
        if self.writes is None:
            return self.app.record(outcome)
        return await self.writes.write(outcome)

    async def _while_in_progress(self, msg: Msg, call: Awaitable[T]) -> T:
        self.at_model[id(msg)] = (msg, time.monotonic())
        try:
            return await call
        finally:
            del self.at_model[id(msg)]

    async def heartbeat(self) -> None:
        """Tell JetStream that requests at a slow model are alive, so it does not redeliver."""
        beat = self.config.ack_wait_s / 3
        while True:
            await asyncio.sleep(beat)
            due = time.monotonic() - beat
            for msg, since in list(self.at_model.values()):
                if since <= due:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _record_success(
        self,
        request: CompletionRequested,
        model: str,
        reply: ModelReply,
        prompt: RenderedPrompt | None,
    ) -> bytes:
        ids = self._ids(request, prompt)
        received = CompletionReceived(
            request_id=request.request_id,
            model=model,
            provider=reply.provider,
            content=reply.content,
            finish_reason=reply.finish_reason,
            usage=reply.usage,
            cost_usd=reply.cost_usd,
            latency_ms=reply.latency_ms,
            **ids,
        )
        usage = self._usage(request, model, reply.provider, reply.latency_ms, "ok", ids, reply)
        event = received.model_dump(mode="json")
        reply_payload = dumps(event)
        if self.config.privacy == "metadata_only":
            event["content"] = None
        completion = await self._record(
            Outcome(
                request.request_id,
                self._stored_request(request),
                "received",
                event,
                usage.model_dump(mode="json"),
            )
        )
        if completion.outcome is not event:
            return self._stored_reply(completion)  # a racing duplicate stored first
        await self.admission.settle(usage)
        return reply_payload

    async def _record_failure(
        self,
        request: CompletionRequested,
        model: str,
        failed: ModelCallFailed,
        prompt: RenderedPrompt | None,
    ) -> bytes:
        ids = self._ids(request, prompt)
        event = CompletionFailed(
            request_id=request.request_id,
            error_type=failed.error_type,
            message=failed.message,
            retryable=failed.retryable,
            model=model,
            provider=failed.provider,
            **ids,
        )
        usage = self._usage(
            request, model, failed.provider or "unknown", failed.latency_ms, "error", ids,
            error_type=failed.error_type.value,
        )  # fmt: skip
        completion = await self._record(
            Outcome(
                request.request_id,
                self._stored_request(request),
                "failed",
                event.model_dump(mode="json"),
                usage.model_dump(mode="json"),
            )
        )
        await self.admission.settle(usage)
        return self._stored_reply(completion)

    async def _reject(self, msg: Msg, rejected: Rejected, reply_to: str | None) -> None:
        await self._fail(msg.data, msg.subject, msg.metadata.sequence.stream, rejected, reply_to)
        await msg.ack()

    async def _fail(
        self, data: bytes, subject: str, seq: int, rejected: Rejected, reply_to: str | None
    ) -> None:
        """End a request that cannot be served: CompletionFailed if it has an id, dead letter."""
        log.warning(
            "rejected request %s: %s", rejected.request_id or "(no id)", rejected.error_type.value
        )
        if rejected.request_id is not None:
            event = CompletionFailed(
                request_id=rejected.request_id,
                error_type=rejected.error_type,
                message=rejected.message[:MAX_REASON_CHARS],
                retryable=False,
            )
            completion = await asyncio.to_thread(
                self.app.record_failed,
                rejected.request_id,
                {"request_id": rejected.request_id},
                event.model_dump(mode="json"),
            )
            self.relay.poke()
            await self._reply(reply_to, self._stored_reply(completion))
        await self._dead_letter(data, subject, seq, rejected)

    async def _dead_letter(self, data: bytes, subject: str, seq: int, rejected: Rejected) -> None:
        headers = {
            subjects.ERROR_TYPE_HEADER: rejected.error_type.value,
            subjects.ERROR_HEADER: header_text(rejected.message),
            subjects.ORIGINAL_SUBJECT_HEADER: subject,
            subjects.MSG_ID_HEADER: f"dlq:{subjects.REQUESTS_STREAM}:{seq}",
        }
        payload = data
        about = {"bytes": len(data), "request_id": rejected.request_id}
        if self.config.privacy == "metadata_only":
            # contents never leave the request path in this mode, not even into dead letters
            payload = dumps({"redacted": True} | about)
        elif len(data) + header_bytes(headers) > self.nc.max_payload:
            # with the headers it would exceed what the server takes, and the server would close
            # this connection: keep what the message was instead (the reason is in the headers)
            payload = dumps({"too_large": True} | about | {"stream_seq": seq})
        await self.js.publish(
            subjects.DEAD_LETTER.format(service="completion"), payload, headers=headers
        )

    async def _reply(self, reply_to: str | None, payload: bytes) -> None:
        """Send the terminal event to the caller's inbox. It is stored and published already:
        an inbox that cannot take it is the caller's loss, not a reason to handle it again."""
        if reply_to is None:
            return
        try:
            await self.nc.publish(reply_to, payload)
        except Exception as exc:
            log.warning("could not reply on %s: %s", reply_to, str(exc) or type(exc).__name__)

    async def watch_given_up(self, stop: asyncio.Event) -> None:
        sub = await self.js.pull_subscribe_bind(
            durable=subjects.GAVE_UP_CONSUMER, stream=subjects.ADVISORIES_STREAM
        )
        backoff = bus.Backoff("fetching max-deliveries advisories")
        try:
            while not stop.is_set():
                advisories = await bus.fetch(sub, 16, 1.0, backoff)
                for advisory in advisories:
                    try:
                        await self.end_given_up(json.loads(advisory.data))
                        await advisory.ack()
                    except Exception:
                        log.exception("could not end a request JetStream gave up on")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def end_given_up(self, notice: dict[str, Any]) -> None:
        """A request whose workers kept dying: JetStream gave up redelivering, so end it here."""
        seq = int(notice["stream_seq"])
        try:
            stored = await self.js.get_msg(subjects.REQUESTS_STREAM, seq)
        except NotFoundError:
            return  # acked after all, or already ended by another worker
        data = stored.data or b""
        reply_to = reply_subject(stored.headers)
        request_id = salvage_request_id(data)
        done = await asyncio.to_thread(self.app.find, request_id) if request_id else None
        if done is not None and done.is_terminal:
            # its worker stored the outcome, then died before acking
            await self._reply(reply_to, self._stored_reply(done))
        else:
            rejected = Rejected(
                ErrorType.internal,
                f"request was delivered {notice.get('deliveries', '?')} times and no worker "
                "finished it (each stopped while handling it); llmbus gave up",
                request_id,
            )
            await self._fail(data, stored.subject or "", seq, rejected, reply_to)
        await self.js.delete_msg(subjects.REQUESTS_STREAM, seq)

    async def _retry_later(self, msg: Msg, reply_to: str | None) -> None:
        with contextlib.suppress(Exception):
            if msg.metadata.num_delivered < self.config.max_deliver:
                await msg.nak(delay=1.0)
                return
            rejected = Rejected(
                ErrorType.internal,
                f"request failed {msg.metadata.num_delivered} times inside llmbus; see its logs",
                salvage_request_id(msg.data),
            )
            await self._reject(msg, rejected, reply_to)

    def _usage(
        self,
        request: CompletionRequested,
        model: str,
        provider: str,
        latency_ms: float,
        status: str,
        ids: dict[str, Any],
        reply: ModelReply | None = None,
        error_type: str | None = None,
    ) -> UsageRecorded:
        usage = reply.usage if reply else None
        attempt = self.claims[request.request_id].attempt
        return UsageRecorded(
            usage_id=f"{request.request_id}:{attempt}",
            request_id=request.request_id,
            provider=provider,
            model=model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
            cost_usd=reply.cost_usd if reply else 0.0,
            latency_ms=latency_ms,
            status=status,  # type: ignore[arg-type]
            error_type=error_type,
            role=request.role,
            tags=request.tags,
            grant_id=self.admission.grant_of(request.request_id),
            **ids,
        )

    @staticmethod
    def _ids(request: CompletionRequested, prompt: RenderedPrompt | None = None) -> dict[str, Any]:
        """The request's ids and prompt version, carried by every event it causes."""
        return {
            "user_id": request.user_id,
            "team_id": request.team_id,
            "project_id": request.project_id,
            "conversation_id": request.conversation_id,
            "prompt_key": request.prompt.key if request.prompt else None,
            "prompt_version": prompt.version if prompt else None,
        }

    def _stored_request(self, request: CompletionRequested) -> dict[str, Any]:
        if self.config.privacy == "metadata_only":
            exclude: Any = {"messages": True, "prompt": {"variables"}}
            stored = request.model_dump(mode="json", exclude_none=True, exclude=exclude)
            if request.messages is not None:
                stored["message_count"] = len(request.messages)
            return stored
        return request.model_dump(mode="json", exclude_none=True)

    @staticmethod
    def _stored_reply(completion: Completion) -> bytes:
        assert completion.outcome is not None
        return dumps(completion.outcome)


def reply_subject(headers: dict[str, str] | None) -> str | None:
    """The caller's Llmbus-Reply-To, if a reply can be published there; the request is served
    either way, and its outcome still goes to the events stream."""
    reply_to = (headers or {}).get(subjects.REPLY_TO_HEADER)
    if not reply_to:
        return None
    if not subjects.is_publish_subject(reply_to):
        log.warning("%s is not a subject a reply can go to: no reply", subjects.REPLY_TO_HEADER)
        return None
    return reply_to
