"""The usage ledger: one aggregate per provider call, so each call is recorded exactly once."""

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

USAGE_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:usage")
# Stored events carry these topics: they name the module ProviderCall was first defined in. The
# class has moved since; its topics stay, so that stores written before load, and the
# projection's query by topic (UsageApplication.recorded_since) finds every call.
PROVIDER_CALL_TOPIC = "llmbus.services.usage.domain:ProviderCall"


class ProviderCall(Aggregate):
    TOPIC = PROVIDER_CALL_TOPIC

    class Created(Aggregate.Created):
        TOPIC = f"{PROVIDER_CALL_TOPIC}.Created"  # never stored (UsageRecorded creates a call)

    class UsageRecorded(Aggregate.Created):
        """A provider call, as the completion service reported it (a UsageRecorded contract)."""

        TOPIC = f"{PROVIDER_CALL_TOPIC}.UsageRecorded"
        usage_id: str
        usage: dict[str, Any]

    @staticmethod
    def create_id(usage_id: str) -> UUID:
        return uuid5(USAGE_NAMESPACE, usage_id)

    @event(UsageRecorded)
    def __init__(self, usage_id: str, usage: dict[str, Any]) -> None:
        self.usage_id = usage_id
        self.usage = usage
