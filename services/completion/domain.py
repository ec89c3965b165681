"""The Completion aggregate: one per request_id, so a request can only ever complete once."""

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from llmbus.shared.errors import LlmbusError

COMPLETION_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:completion")
CLAIM_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:call-claim")
DUPLICATE_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:duplicate-call")


class AlreadyTerminalError(LlmbusError):
    """A completion that already ended cannot end again."""


class Completion(Aggregate):
    @staticmethod
    def create_id(request_id: str) -> UUID:
        return uuid5(COMPLETION_NAMESPACE, request_id)

    @event("Requested")
    def __init__(self, request_id: str, request: dict[str, Any]) -> None:
        self.request_id = request_id
        self.request = request
        self.status = "requested"
        self.outcome: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None

    # `outcome` is the terminal event as published; `usage` is the provider call it paid for,
    # absent when the request failed before any provider call.
    class Received(Aggregate.Event):
        outcome: dict[str, Any]
        usage: dict[str, Any]

    class Failed(Aggregate.Event):
        outcome: dict[str, Any]
        usage: dict[str, Any] | None

    @event(Received)
    def receive(self, outcome: dict[str, Any], usage: dict[str, Any]) -> None:
        self._check_not_terminal()
        self.status = "received"
        self.outcome = outcome
        self.usage = usage

    @event(Failed)
    def fail(self, outcome: dict[str, Any], usage: dict[str, Any] | None) -> None:
        self._check_not_terminal()
        self.status = "failed"
        self.outcome = outcome
        self.usage = usage

    @property
    def is_terminal(self) -> bool:
        return self.outcome is not None

    def _check_not_terminal(self) -> None:
        if self.is_terminal:
            raise AlreadyTerminalError(f"completion {self.request_id} already {self.status}")


class CallClaim(Aggregate):
    """Attempt `attempt` at calling the model for a request, held by one worker until its lease
    runs out. One aggregate per (request, attempt): a second claim of the same attempt fails to
    save, so two workers never both call for one attempt. The holder renews the lease while the
    call runs; only once it lapses (the holder is gone) may another worker claim the next one.
    """

    @staticmethod
    def create_id(request_id: str, attempt: int) -> UUID:
        return uuid5(CLAIM_NAMESPACE, f"{request_id}#{attempt}")

    class Claimed(Aggregate.Created):
        request_id: str
        attempt: int
        holder: str
        lease_until: float

    @event(Claimed)
    def __init__(self, request_id: str, attempt: int, holder: str, lease_until: float) -> None:
        self.request_id = request_id
        self.attempt = attempt
        self.holder = holder
        self.lease_until = lease_until

    @event("Renewed")
    def renew(self, lease_until: float) -> None:
        self.lease_until = lease_until

    def lapsed(self, now: float) -> bool:
        return now >= self.lease_until


class DuplicateCall(Aggregate):
    """A paid provider call for a request that another call completed first: a second attempt
    after a lapsed claim, or a holder that outlived its lease.

    The outcome stays the first one; the call is still recorded, since it was paid for.
    """

    @staticmethod
    def create_id(usage: dict[str, Any]) -> UUID:
        # one per paid call: recording it again (a redelivery) finds it already there
        return uuid5(DUPLICATE_NAMESPACE, str(usage["usage_id"]))

    class Recorded(Aggregate.Created):
        request_id: str
        usage: dict[str, Any]

    @event(Recorded)
    def __init__(self, request_id: str, usage: dict[str, Any]) -> None:
        self.request_id = request_id
        self.usage = usage


CANCEL_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:cancel")


class CancelMark(Aggregate):
    """A cancel asked for a request no worker was running: the worker that takes it later ends
    it cancelled, with no model call. One per request_id; asking again changes nothing."""

    @staticmethod
    def create_id(request_id: str) -> UUID:
        return uuid5(CANCEL_NAMESPACE, request_id)

    class Marked(Aggregate.Created):
        request_id: str
        by: str | None

    @event(Marked)
    def __init__(self, request_id: str, by: str | None) -> None:
        self.request_id = request_id
        self.by = by
