"""Replies: a handler's reply model as bytes, or the one ErrorReply, whatever went wrong."""

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import BaseMiddleware
from faststream._internal.context.repository import ContextRepo
from faststream.message import StreamMessage
from faststream.nats import NatsResponse
from pydantic import BaseModel, ValidationError

from llmbus.shared import subjects
from llmbus.shared.contracts.base import ErrorReply, describe, too_large
from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import LlmbusError, ReplyErrorType
from llmbus.shared.identity import set_caller
from llmbus.shared.rpc.metering import RpcMeter

log = logging.getLogger("llmbus.rpc")
# the reply's headers (FastStream's content-type and correlation_id) count against the server's
# max_payload too: one over it makes the server close the connection
HEADER_ROOM = 256
MAX_CORRELATION_ID = 64
# what is wrong with the request, and said so; anything else is `internal`, said in the log only
REQUEST_ERRORS = frozenset(ReplyErrorType) - {ReplyErrorType.internal}


def error_reply(exc: Exception, subject: str, service: str) -> ErrorReply:
    """What a request that raised `exc` is answered with. Never echoes the input; an
    unexpected error is logged with its traceback and its text stays in the log."""
    if isinstance(exc, ValidationError):
        invalid = ReplyErrorType.too_large if too_large(exc) else ReplyErrorType.invalid_request
        return ErrorReply(error_type=invalid, message=describe(exc))
    said = exc.error_type if isinstance(exc, LlmbusError) else None
    if said not in REQUEST_ERRORS:
        log.error("%s failed", subject, exc_info=exc)
        message = f"{subject} failed inside the {service} service; see its log"
        return ErrorReply(error_type=ReplyErrorType.internal, message=message)
    return ErrorReply(error_type=ReplyErrorType(said), message=str(exc))


async def outcome(
    call: Awaitable[BaseModel | None], subject: str, service: str, meter: RpcMeter | None
) -> BaseModel | None:
    """What a handler's `call` comes to: its reply, or the ErrorReply of what it raised. The
    one place both paths (FastStream's and the lean one) run a handler, held in `meter`."""
    with meter.holding() if meter else contextlib.nullcontext():
        try:
            return await call
        except Exception as exc:
            return error_reply(exc, subject, service)


def too_large_reply(subject: str, size: int, max_payload: int) -> ErrorReply:
    message = (
        f"the answer to {subject} is {size} bytes, more than fits the NATS server's "
        f"max_payload of {max_payload} bytes with its headers"
    )
    return ErrorReply(error_type=ReplyErrorType.too_large, message=message)


class ReplyMiddleware(BaseMiddleware):
    """The one place a request/reply handler's outcome becomes the bytes sent back."""

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: ContextRepo,
        service: str,
        max_payload: Callable[[], int],
        caller_of: Callable[[str], Awaitable[ClientIdentity | None]],
        meter: RpcMeter | None,
    ) -> None:
        super().__init__(msg, context=context)
        self.service = service
        self.max_payload = max_payload
        self.caller_of = caller_of
        self.meter = meter

    async def consume_scope(
        self, call_next: Callable[..., Any], msg: StreamMessage[Any]
    ) -> NatsResponse | None:
        subject = subjects.public_subject(msg.raw_message.subject)

        async def call() -> BaseModel | None:
            set_caller(await self.caller_of(msg.raw_message.subject))  # this request's task only
            reply: BaseModel | None = await call_next(msg)
            return reply

        reply = await outcome(call(), subject, self.service, self.meter)
        if reply is None:
            return None  # a subscription answers nothing
        payload = reply_bytes(reply, subject, bool(msg.reply_to), self.max_payload(), self.meter)
        return NatsResponse(payload, correlation_id=correlation_id(msg.correlation_id))


def reply_bytes(
    reply: BaseModel, subject: str, asked: bool, max_payload: int, meter: RpcMeter | None = None
) -> bytes:
    """The reply as sent: too_large in its place when it would not fit the server; `meter`
    counts it."""
    if isinstance(reply, ErrorReply) and not asked:
        # fire-and-forget: nobody to tell but the log
        log.warning("ignoring a message on %s: %s", subject, reply.message)
    payload = reply.model_dump_json().encode()
    if len(payload) > max_payload - HEADER_ROOM:
        reply = too_large_reply(subject, len(payload), max_payload)
        payload = reply.model_dump_json().encode()
    if meter is not None:
        meter.answered(reply)
    return payload


def correlation_id(asked: str) -> str:
    # echoed in a header: a caller's huge one must not push the reply over max_payload
    return asked if 0 < len(asked) <= MAX_CORRELATION_ID else uuid.uuid4().hex
