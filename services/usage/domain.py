"""The usage ledger: one aggregate per provider call, so each call is recorded exactly once."""

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

USAGE_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:usage")


class ProviderCall(Aggregate):
    @staticmethod
    def create_id(usage_id: str) -> UUID:
        return uuid5(USAGE_NAMESPACE, usage_id)

    @event("UsageRecorded")
    def __init__(self, usage_id: str, usage: dict[str, Any]) -> None:
        self.usage_id = usage_id
        self.usage = usage
