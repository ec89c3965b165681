"""The conversation service's metrics (shared/metrics.py): the requests its handlers hold, the
errors they answer with, and its consumer's backlog."""

from collections.abc import Callable
from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.nats import NatsResponse

from llmbus.shared import metrics, subjects
from llmbus.shared.errors import ReplyErrorType
from llmbus.shared.settings import Settings

SERVICE = "conversation"
# an ErrorReply as the rpc layer encodes it (shared/rpc/replies.py): its first field
ERROR_REPLY = b'{"error_type":"'
ERROR_TYPES = frozenset(ReplyErrorType)


class RpcMetrics(BaseMiddleware):
    """Counts each request while its handler runs, and each ErrorReply by its type. Included
    with the router, it sits outside the router's ReplyMiddleware: it sees the reply as sent."""

    async def consume_scope(self, call_next: Callable[..., Any], msg: StreamMessage[Any]) -> Any:
        in_flight = metrics.IN_FLIGHT(SERVICE)
        in_flight.inc()
        try:
            reply = await call_next(msg)
        finally:
            in_flight.dec()
        if isinstance(reply, NatsResponse) and isinstance(reply.body, bytes):
            error_type = error_type_of(reply.body)
            if error_type is not None:
                metrics.ERRORS(SERVICE, error_type).inc()
        return reply


def error_type_of(body: bytes) -> str | None:
    if not body.startswith(ERROR_REPLY):
        return None
    end = body.find(b'"', len(ERROR_REPLY))
    error_type = body[len(ERROR_REPLY) : end].decode()
    return error_type if error_type in ERROR_TYPES else None


def conversation_metrics(settings: Settings) -> metrics.MetricsExporter:
    metered = settings.conversation
    return metrics.MetricsExporter(
        SERVICE, metered.metrics_port, metered.metrics_host,
        [(subjects.EVENTS_STREAM, subjects.CONVERSATION_CONSUMER)],
    )  # fmt: skip
