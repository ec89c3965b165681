"""A service's request/reply metrics (shared/metrics.py): the requests its handlers hold now,
and the errors it answers with, by type. Counted where RpcRouter answers, on FastStream's path
and on the lean one alike, so a hot subject counts as any other."""

import contextlib
from collections.abc import Iterator

from pydantic import BaseModel

from llmbus.shared import metrics
from llmbus.shared.contracts.base import ErrorReply


class RpcMeter:
    def __init__(self, service: str) -> None:
        self.service = service
        self.in_flight = metrics.IN_FLIGHT(service)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def answered(self, reply: BaseModel) -> None:
        """`reply` as sent (too_large in place of one that did not fit)."""
        if isinstance(reply, ErrorReply):
            metrics.ERRORS(self.service, reply.error_type.value).inc()
