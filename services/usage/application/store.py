"""The usage event store: provider calls and budgets. Deterministic ids make recording
idempotent under redelivery; a call and the budget settlements it causes are saved together."""

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, cast

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Notification
from eventsourcing.utils import get_topic
from pydantic import ValidationError

from llmbus.services.usage.domain import ProviderCall, RepricedCall
from llmbus.services.usage.recordable import Repriced, Unrecordable
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.eventstore import OutboxApplication, retry_on_conflict

if TYPE_CHECKING:
    from llmbus.services.usage.application.budget_book import BudgetBook

CALL_RECORDED = get_topic(ProviderCall.UsageRecorded)
CALL_REPRICED = get_topic(RepricedCall.UsageRepriced)
# what the projection reads, in the store's order
Projected = UsageRecorded | Unrecordable | Repriced
SAVE_CHUNK = 1000


def provider_call(event: UsageRecorded) -> ProviderCall:
    return ProviderCall(usage_id=event.usage_id, usage=event.model_dump(mode="json"))


class UsageApplication(OutboxApplication):
    name = "Usage"

    def record(self, events: Sequence[UsageRecorded], book: "BudgetBook | None" = None) -> int:
        """Store the calls not stored yet, with their budget settlements; returns how many
        were new. Raises what stops it, with every budget as last saved."""
        try:
            return self._store_calls(events, book)
        except Exception:
            if book is not None:
                book.forget_unsaved()  # a settlement may have failed half way through
            raise

    def _store_calls(self, events: Sequence[UsageRecorded], book: "BudgetBook | None") -> int:
        settled = [budget for event in events for budget in (book.settle(event) if book else [])]
        try:
            budgets = {id(budget): budget for budget in settled}.values()  # aggregates don't hash
            self.save(*(provider_call(e) for e in events), *budgets)
            return len(events)
        except IntegrityError:
            if book is not None:
                book.reload(settled)
            # a failed save has consumed the aggregates' pending events: build them afresh
            return sum(self._record_one(event, book) for event in events)

    def _record_one(self, event: UsageRecorded, book: "BudgetBook | None") -> bool:
        return retry_on_conflict(
            lambda: self._try_record_one(event, book), f"record usage {event.usage_id}"
        )

    def _try_record_one(self, event: UsageRecorded, book: "BudgetBook | None") -> bool:
        if self._has_call(event.usage_id):
            return False  # redelivered: already recorded and settled
        settled = book.settle(event) if book else []
        try:
            self.save(provider_call(event), *settled)
        except IntegrityError:
            if book is not None:
                book.reload(settled)  # another usage service moved a budget: retry
            raise
        return True

    def _has_call(self, usage_id: str) -> bool:
        try:
            self.repository.get(ProviderCall.create_id(usage_id))
        except AggregateNotFoundError:
            return False
        return True

    def recorded_since(self, position: int, limit: int) -> list[tuple[int, Projected]]:
        notifications = self.recorder.select_notifications(
            position, limit, topics=[CALL_RECORDED, CALL_REPRICED], inclusive_of_start=False
        )
        return [(n.id, self._projected(n)) for n in notifications]

    def _projected(self, notification: Notification) -> Projected:
        if notification.topic != CALL_REPRICED:
            return self._recorded(notification)
        repriced = cast(RepricedCall.UsageRepriced, self.mapper.to_domain_event(notification))
        return Repriced(repriced.position, Decimal(repriced.new_cost_usd), repriced.price_version)

    def record_repricing(self, calls: Sequence[RepricedCall]) -> None:
        """Save a repricing's calls, a chunk per transaction (a repricing may touch millions)."""
        for start in range(0, len(calls), SAVE_CHUNK):
            self.save(*calls[start : start + SAVE_CHUNK])

    def _recorded(self, notification: Notification) -> UsageRecorded | Unrecordable:
        recorded = cast(ProviderCall.UsageRecorded, self.mapper.to_domain_event(notification))
        usage = recorded.usage
        try:
            return UsageRecorded.model_validate(usage)
        except ValidationError as exc:
            # stored by a version with a looser contract: skipped, not a stop to what follows
            reason = f"no longer a valid UsageRecorded: {exc.error_count()} schema errors"
            return Unrecordable(str(usage.get("usage_id")), reason, usage)

    def all_recorded(self, batch_size: int = 5000) -> Iterator[tuple[int, Projected]]:
        position = 0
        while batch := self.recorded_since(position, batch_size):
            yield from batch
            position = batch[-1][0]

    def recorded_count(self) -> int:
        return self.recorder.max_notification_id() or 0
