"""The usage event store. Deterministic ids make recording idempotent under redelivery."""

from collections.abc import Iterator, Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError

from llmbus.services.usage.domain import ProviderCall
from llmbus.shared.contracts import UsageRecorded


def provider_call(event: UsageRecorded) -> ProviderCall:
    return ProviderCall(usage_id=event.usage_id, usage=event.model_dump(mode="json"))


class UsageApplication(Application[Any]):
    name = "Usage"

    def record(self, events: Sequence[UsageRecorded]) -> int:
        """Store the calls not stored yet; returns how many were new."""
        try:
            self.save(*(provider_call(e) for e in events))
            return len(events)
        except IntegrityError:
            # a failed save has consumed the aggregates' pending events: build them afresh
            return sum(self._save_if_new(provider_call(e)) for e in events)

    def _save_if_new(self, call: ProviderCall) -> bool:
        try:
            self.save(call)
        except IntegrityError:
            return False  # redelivered: already recorded
        return True

    def recorded_since(self, position: int, limit: int) -> list[tuple[int, UsageRecorded]]:
        notifications = self.recorder.select_notifications(
            position, limit, inclusive_of_start=False
        )
        return [
            (n.id, UsageRecorded.model_validate(self.mapper.to_domain_event(n).usage))  # type: ignore[attr-defined]
            for n in notifications
        ]

    def all_recorded(self, batch_size: int = 5000) -> Iterator[tuple[int, UsageRecorded]]:
        position = 0
        while batch := self.recorded_since(position, batch_size):
            yield from batch
            position = batch[-1][0]

    def recorded_count(self) -> int:
        return self.recorder.max_notification_id() or 0
