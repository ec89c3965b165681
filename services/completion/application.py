"""The completion event store: records each request with its outcome, atomically and once."""

from dataclasses import dataclass
from typing import Any, Literal
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from llmbus.services.completion.domain import Completion, DuplicateCall
from llmbus.shared.eventstore import OutboxApplication


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


class CompletionApplication(OutboxApplication):
    name = "Completions"

    def find(self, request_id: str) -> Completion | None:
        try:
            completion: Completion = self.repository.get(Completion.create_id(request_id))
        except AggregateNotFoundError:
            return None
        return completion

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
                # the losing call was paid for: keep it, under a usage_id of its own
                usage = outcome.usage | {"usage_id": f"{outcome.request_id}:{uuid4().hex}"}
                self.save(DuplicateCall(request_id=outcome.request_id, usage=usage))
            return existing
        return completion
