"""llmbus.completion.status and llmbus.completion.cancel: where a request is, and stopping it.

The store knows every request that ended; a request's call claim names the worker running it,
which answers for it (control.py); a request no worker has taken yet is still in JetStream's
requests stream, which is scanned for it (bounded: QUEUE_SCAN_LIMIT messages). A client learns
only of its own requests: another's is `unknown` to it, as one never sent is.
"""

import asyncio
import json
import time
from typing import Any, Literal

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.js.errors import NotFoundError

from llmbus.services.completion.application import CompletionApplication
from llmbus.shared import subjects
from llmbus.shared.contracts.requests import (
    CancelReply,
    CompletionStatus,
    RequestRef,
    Status,
    WorkerAnswer,
    WorkerAsk,
)
from llmbus.shared.identity import caller, is_admin

QUEUE_SCAN_LIMIT = 10_000
WORKER_TIMEOUT_S = 2.0
CANCEL_TIMEOUT_S = 12.0  # a cancelled call ends, and is recorded, first (control.CANCEL_WAIT_S)


class Tracking:
    def __init__(self, app: CompletionApplication, nc: NatsClient) -> None:
        self.app = app
        self.nc = nc

    async def status(self, ref: RequestRef) -> CompletionStatus:
        rid = ref.request_id
        stored = await self._stored(rid)
        if stored is not None:
            return stored
        running = await self._holder(rid, "status")
        if running is not None and running.held:
            if not self._visible(running.owner):
                return CompletionStatus(request_id=rid, status="unknown")
            return CompletionStatus(
                request_id=rid, status="running", since=running.since, model=running.model,
                attempts=running.attempts, cancel_requested=await self._marked(rid),
            )  # fmt: skip
        stored = await self._stored(rid)  # it may have ended meanwhile
        if stored is not None:
            return stored
        if await self._queued(rid):
            return CompletionStatus(request_id=rid, status="queued",
                                    cancel_requested=await self._marked(rid))  # fmt: skip
        return CompletionStatus(request_id=rid, status="unknown")

    async def _stored(self, rid: str) -> CompletionStatus | None:
        """How the request ended, as the store has it (unknown: another client's); None: not
        ended."""
        ended = await asyncio.to_thread(self.app.find, rid)
        if ended is None or not ended.is_terminal:
            return None
        if not self._visible(ended.request.get("owner") or ended.request.get("sent_by")):
            return CompletionStatus(request_id=rid, status="unknown")
        status: Status = "received" if ended.status == "received" else "failed"
        return CompletionStatus(request_id=rid, status=status, outcome=ended.outcome)

    async def _marked(self, rid: str) -> bool:
        return await asyncio.to_thread(self.app.cancel_marked, rid)

    async def cancel(self, ref: RequestRef) -> CancelReply:
        rid = ref.request_id
        found = await self.status(ref)
        if found.status in ("received", "failed"):
            return self._finished(rid, found.outcome)
        if found.status == "unknown":
            return CancelReply(request_id=rid, result="unknown",
                               message=f"no request {rid!r} is known to llmbus")  # fmt: skip
        # marked first, then its holder looked for: a worker that claims it after this sees the
        # mark; one that claimed it before is found
        who = caller()
        await asyncio.to_thread(self.app.mark_cancel, rid, who.name if who else None)
        answer = await self._holder(rid, "cancel", CANCEL_TIMEOUT_S)
        if answer is not None and answer.held and answer.outcome is not None:
            return self._ended_by_cancel(rid, answer.outcome)
        ended = await asyncio.to_thread(self.app.find, rid)
        if ended is not None and ended.is_terminal:
            return self._ended_by_cancel(rid, ended.outcome)
        return CancelReply(
            request_id=rid, result="cancelling",
            message="not running yet: it ends cancelled, with no model call, when a worker "
            "takes it",
        )  # fmt: skip

    def _visible(self, owner: str | None) -> bool:
        who = caller()
        return is_admin(who) or (who is not None and owner == who.name)

    async def _holder(
        self, rid: str, op: Literal["status", "cancel"], timeout_s: float = WORKER_TIMEOUT_S
    ) -> WorkerAnswer | None:
        """What the worker holding the request's live claim says; None: no one holds it."""
        claim = await asyncio.to_thread(self.app.latest_claim, rid)
        if claim is None or claim.lapsed(time.time()):
            return None
        ask = WorkerAsk(op=op, request_id=rid).model_dump_json().encode()
        try:
            reply = await self.nc.request(subjects.worker_subject(claim.holder), ask,
                                          timeout=timeout_s)  # fmt: skip
        except (NoRespondersError, TimeoutError):
            return None  # its worker is gone: the next to claim it sees any cancel mark
        return WorkerAnswer.model_validate_json(reply.data)

    async def _queued(self, rid: str) -> bool:
        """Whether the request waits in the requests stream (a client's, only for that client:
        its subject names who sent it, or its sent_by, a chat turn's)."""
        js, needle, seq = self.nc.jetstream(), rid.encode(), 1
        for _ in range(QUEUE_SCAN_LIMIT):
            try:
                msg = await js.get_msg(subjects.REQUESTS_STREAM, seq=seq, subject=">", next=True)
            except NotFoundError:
                return False
            seq = (msg.seq or seq) + 1
            if msg.data and needle in msg.data:
                rid_of, sent_by = _ids(msg.data)
                if rid_of == rid:
                    return self._visible(subjects.client_of(msg.subject or "") or sent_by)
        return False

    @staticmethod
    def _finished(rid: str, outcome: dict[str, Any] | None) -> CancelReply:
        return CancelReply(request_id=rid, result="already_finished",
                           message="it had already finished", outcome=outcome)  # fmt: skip

    def _ended_by_cancel(self, rid: str, outcome: dict[str, Any] | None) -> CancelReply:
        if outcome is not None and outcome.get("error_type") == "cancelled":
            return CancelReply(request_id=rid, result="cancelled", message="cancelled",
                               outcome=outcome)  # fmt: skip
        return self._finished(rid, outcome)


def _ids(data: bytes) -> tuple[str | None, str | None]:
    """A queued request's request_id and sent_by, where they are strings."""
    try:
        body = json.loads(data)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    rid, sent_by = body.get("request_id"), body.get("sent_by")
    return (rid if isinstance(rid, str) else None), (sent_by if isinstance(sent_by, str) else None)
