"""The completion event store: records each request with its outcome, atomically and once."""

from typing import Any
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from llmbus.services.completion.domain import Completion, DuplicateCall
from llmbus.shared.eventstore import OutboxApplication


class CompletionApplication(OutboxApplication):
    name = "Completions"

    def find(self, request_id: str) -> Completion | None:
        try:
            completion: Completion = self.repository.get(Completion.create_id(request_id))
        except AggregateNotFoundError:
            return None
        return completion

    def record_received(
        self,
        request_id: str,
        request: dict[str, Any],
        outcome: dict[str, Any],
        usage: dict[str, Any],
    ) -> Completion:
        completion = Completion(request_id=request_id, request=request)
        completion.receive(outcome, usage)
        return self._save_first(completion)

    def record_failed(
        self,
        request_id: str,
        request: dict[str, Any],
        outcome: dict[str, Any],
        usage: dict[str, Any] | None = None,
    ) -> Completion:
        completion = Completion(request_id=request_id, request=request)
        completion.fail(outcome, usage)
        return self._save_first(completion)

    def _save_first(self, completion: Completion) -> Completion:
        """Store the outcome, or return the one already stored by a racing duplicate."""
        try:
            self.save(completion)
        except IntegrityError:
            existing = self.find(completion.request_id)
            assert existing is not None
            if completion.usage is not None:
                usage = completion.usage | {"usage_id": f"{completion.request_id}:{uuid4().hex}"}
                self.save(DuplicateCall(request_id=completion.request_id, usage=usage))
            return existing
        return completion
