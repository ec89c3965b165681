"""What the completion store's events become on NATS."""

import json
from collections.abc import Iterator
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from llmbus.services.completion.domain import Completion, DuplicateCall
from llmbus.shared import subjects
from llmbus.shared.outbox import Outbound

# all that route() publishes: the relay does not even read the rest (claims and their renewals)
TOPICS = [get_topic(e) for e in (Completion.Received, Completion.Failed, DuplicateCall.Recorded)]


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def route(domain_event: DomainEventProtocol[Any]) -> Iterator[Outbound]:
    if isinstance(domain_event, DuplicateCall.Recorded):
        usage_id = domain_event.usage["usage_id"]
        yield Outbound(subjects.USAGE_RECORDED, dumps(domain_event.usage), f"usage:{usage_id}")
        return
    if isinstance(domain_event, Completion.Received):
        subject = subjects.COMPLETION_RECEIVED
    elif isinstance(domain_event, Completion.Failed):
        subject = subjects.COMPLETION_FAILED
    else:
        return
    outcome, usage = domain_event.outcome, domain_event.usage
    request_id = outcome["request_id"]
    yield Outbound(subject, dumps(outcome), f"completion:{request_id}")
    if usage is not None:
        yield Outbound(subjects.USAGE_RECORDED, dumps(usage), f"usage:{usage['usage_id']}")
