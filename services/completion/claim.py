"""Who calls the model for a request: the worker holding its claim, once per request_id.

A request that already ended is answered from the store. A copy delivered to this worker while
the request runs here waits for its reply. A request claimed by another live worker waits for
that worker's outcome, or for its lease to lapse. A re-send of a request_id with a different
request is refused (request_conflict) and leaves the first outcome as it was.
"""

import asyncio
import logging
import time

from llmbus.services.completion.admission import Admission
from llmbus.services.completion.admit import Admit
from llmbus.services.completion.domain import CallClaim, Completion
from llmbus.services.completion.heartbeat import Heartbeat
from llmbus.services.completion.job import Job
from llmbus.services.completion.reply import Reply, stored_reply
from llmbus.services.completion.store import CompletionStore

log = logging.getLogger("llmbus.completion")

# how often a worker that found a request claimed by another looks for its outcome (or lapse)
CLAIM_POLL_S = 0.5


def differs(job: Job, ended: Completion) -> bool:
    """Whether the stored request asked for something else. One stored before requests were
    kept with their digest (or refused before it was read) cannot tell, and is taken as the same.
    """
    digest = ended.request.get("digest")
    return digest is not None and digest != job.digest


class Claim:
    def __init__(
        self,
        lease_s: float,
        store: CompletionStore,
        admission: Admission,
        heartbeat: Heartbeat,
        admit: Admit,
        reply: Reply,
    ) -> None:
        self.lease_s = lease_s
        self.store = store
        self.admission = admission
        self.heartbeat = heartbeat
        self.admit = admit
        self.reply = reply
        self.running: dict[str, Job] = {}  # request_id -> the job running it here
        self.held: dict[str, CallClaim] = {}  # renewed while their calls run

    async def take(self, job: Job) -> None:
        first = self.running.get(job.request_id)
        if first is not None:
            await self._follow(job, first)
            return
        self.running[job.request_id] = job
        job.replied = asyncio.get_running_loop().create_future()
        try:
            await self._take_first(job)
        except BaseException as exc:
            if not job.replied.done():
                job.replied.set_exception(exc)
                job.replied.exception()  # mark retrieved: no copy may be waiting
            raise
        finally:
            del self.running[job.request_id]
            self.admission.abandon(job.request_id)  # if it ended without settling

    async def _follow(self, job: Job, first: Job) -> None:
        if first.digest != job.digest:
            await self.reply.conflict(job)
            return
        assert first.replied is not None
        await self.reply.send(job, await asyncio.shield(first.replied))

    async def _take_first(self, job: Job) -> None:
        ended = await self.store.find(job.request_id)
        if ended is None or not ended.is_terminal:
            ended = await self._claim(job)
        if ended is None:
            assert job.claim is not None
            # a cancel asked while it was queued (control.py marks it, then looks for a holder)
            job.cancel_requested |= await self.store.cancel_marked(job.request_id)
            self.held[job.request_id] = job.claim
            try:
                await self.admit.take(job)
            finally:
                del self.held[job.request_id]
        elif differs(job, ended):
            await self.reply.conflict(job)
        else:
            await self.reply.send(job, stored_reply(ended))

    async def _claim(self, job: Job) -> Completion | None:
        """None once this worker holds the claim to call (on job.claim), or the outcome of
        another worker's call.

        JetStream redelivers a request whose worker seems silent, also while that worker is
        still at the model (a busy machine's heartbeat came late): the claim, not the delivery,
        decides who calls."""
        while True:
            answer = await self.store.claim(
                (job.request_id, self.admission.holder, time.time(), self.lease_s)
            )
            if answer.mine is not None:
                job.claim = answer.mine
                return None
            if answer.ended is not None:
                return answer.ended
            assert answer.held_by is not None
            lapses_in = answer.held_by.lease_until - time.time()
            pause = min(CLAIM_POLL_S, max(lapses_in, 0.0) + 0.01)
            await self.heartbeat.during(job.msg, asyncio.sleep(pause))
            stored = await self.store.find(job.request_id)
            if stored is not None and stored.is_terminal:
                return stored

    async def renew(self) -> None:
        """Renew the claims of calls still running, well before their leases lapse."""
        every = self.lease_s / 3
        while True:
            await asyncio.sleep(every)
            now = time.time()
            due = [c for c in self.held.values() if c.lease_until - now < 2 * every]
            if not due:
                continue
            try:
                await self.store.renew(due, now, self.lease_s)
            except Exception:
                log.exception("could not renew %d claims; retrying", len(due))
