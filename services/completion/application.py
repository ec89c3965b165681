"""The completion event store: records each request with its outcome, atomically and once."""

from dataclasses import dataclass
from typing import Any, Literal
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from llmbus.services.completion.domain import CallClaim, CancelMark, Completion, DuplicateCall
from llmbus.shared.eventstore import OutboxApplication

# a request's claims are numbered 1, 2, …; each is a worker that died holding it (or a race)
MAX_ATTEMPTS_SCANNED = 100


@dataclass(frozen=True)
class Outcome:
    """How a request ended, ready to be recorded. A recipe, not an aggregate: a failed batch
    save consumes an aggregate's pending events, so a retry builds it afresh."""

    request_id: str
    request: dict[str, Any]
    status: Literal["received", "failed"]
    event: dict[str, Any]
    usage: dict[str, Any] | None = None

    def completion(self) -> Completion:
        completion = Completion(request_id=self.request_id, request=self.request)
        if self.status == "received":
            assert self.usage is not None
            completion.receive(self.event, self.usage)
        else:
            completion.fail(self.event, self.usage)
        return completion


@dataclass(frozen=True)
class ClaimAnswer:
    """What a claim found: this worker's claim to call, the request's outcome if it has one, or
    the live claim of another worker (wait for its outcome, or for its lease to lapse)."""

    mine: CallClaim | None = None
    ended: Completion | None = None
    held_by: CallClaim | None = None


class CompletionApplication(OutboxApplication):
    name = "Completions"

    def claim(self, request_id: str, holder: str, now: float, lease_s: float) -> ClaimAnswer:
        """Claim the next attempt at calling the model for a request, atomically: the first
        attempt that is not claimed yet, once every earlier one has lapsed."""
        attempt = 1
        while True:
            claim = CallClaim(request_id, attempt, holder, now + lease_s)
            try:
                self.save(claim)
                return ClaimAnswer(mine=claim)
            except IntegrityError:
                pass
            held: CallClaim = self.repository.get(CallClaim.create_id(request_id, attempt))
            ended = self.find(request_id)
            if ended is not None and ended.is_terminal:
                return ClaimAnswer(ended=ended)
            # this worker's own earlier attempt ended unrecorded (it is asking again): its call
            # may have been paid, so the next one is an attempt of its own too
            if not held.lapsed(now) and held.holder != holder:
                return ClaimAnswer(held_by=held)
            attempt += 1  # its holder is gone: the next attempt is a call of its own

    def renew(self, claims: list[CallClaim], now: float, lease_s: float) -> None:
        for claim in claims:
            claim.renew(now + lease_s)
        self.save(*claims)

    def claim_many(self, asks: list[tuple[str, str, float, float]]) -> list[ClaimAnswer]:
        """Claims for concurrent requests, in one transaction when none was claimed before."""
        claims = [CallClaim(rid, 1, holder, now + lease) for rid, holder, now, lease in asks]
        try:
            self.save(*claims)
        except IntegrityError:
            return [self.claim(*ask) for ask in asks]
        return [ClaimAnswer(mine=claim) for claim in claims]

    def find(self, request_id: str) -> Completion | None:
        try:
            completion: Completion = self.repository.get(Completion.create_id(request_id))
        except AggregateNotFoundError:
            return None
        return completion

    def latest_claim(self, request_id: str) -> CallClaim | None:
        """The request's last call claim: who holds (or held) it, and until when."""
        latest = None
        for attempt in range(1, MAX_ATTEMPTS_SCANNED + 1):
            if not self.recorder.select_events(CallClaim.create_id(request_id, attempt), limit=1):
                break
            latest = attempt
        if latest is None:
            return None
        claim: CallClaim = self.repository.get(CallClaim.create_id(request_id, latest))
        return claim

    def mark_cancel(self, request_id: str, by: str | None) -> None:
        try:
            self.save(CancelMark(request_id=request_id, by=by))
        except IntegrityError:
            pass  # asked before

    def cancel_marked(self, request_id: str) -> bool:
        return bool(self.recorder.select_events(CancelMark.create_id(request_id), limit=1))

    def record(self, outcome: Outcome) -> Completion:
        return self.record_many([outcome])[0]

    def record_many(self, outcomes: list[Outcome]) -> list[Completion]:
        """Store each outcome, or the one a racing duplicate stored first; one transaction
        for the whole batch unless a duplicate is among them."""
        completions = [outcome.completion() for outcome in outcomes]
        try:
            self.save(*completions)
        except IntegrityError:
            return [self._record_first(outcome) for outcome in outcomes]
        return completions

    def record_received(
        self, request_id: str, request: dict[str, Any], event: dict[str, Any], usage: dict[str, Any]
    ) -> Completion:
        return self.record(Outcome(request_id, request, "received", event, usage))

    def record_failed(
        self,
        request_id: str,
        request: dict[str, Any],
        event: dict[str, Any],
        usage: dict[str, Any] | None = None,
    ) -> Completion:
        return self.record(Outcome(request_id, request, "failed", event, usage))

    def _record_first(self, outcome: Outcome) -> Completion:
        completion = outcome.completion()
        try:
            self.save(completion)
        except IntegrityError:
            existing = self.find(outcome.request_id)
            assert existing is not None
            if outcome.usage is not None:
                self._record_duplicate(outcome.request_id, outcome.usage, existing)
            return existing
        return completion

    def _record_duplicate(self, request_id: str, usage: dict[str, Any], first: Completion) -> None:
        """The losing call was paid for: keep it. Each attempt has a usage_id of its own; one
        that is already the outcome's (a call made without a claim) gets a fresh one."""
        if first.usage is not None and first.usage.get("usage_id") == usage.get("usage_id"):
            usage = usage | {"usage_id": f"{request_id}:{uuid4().hex}"}
        try:
            self.save(DuplicateCall(request_id=request_id, usage=usage))
        except IntegrityError:
            pass  # recorded before: this is a redelivery of the same call
