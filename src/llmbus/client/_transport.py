"""The one request/reply helper every sub-client uses, and the one place an ErrorReply becomes a
RequestError."""

import json
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from pydantic import BaseModel, ValidationError

from llmbus.shared.contracts import ErrorReply
from llmbus.shared.errors import LlmbusError, RequestError

if TYPE_CHECKING:
    from llmbus.client.core import Client

ReplyT = TypeVar("ReplyT", bound=BaseModel)
DEFAULT_TIMEOUT_S = 10.0


def new_request_id() -> str:
    return uuid.uuid4().hex


def encode(request: BaseModel | dict[str, Any]) -> bytes:
    """A contract as its JSON; a dict without its None values, so the service's defaults hold."""
    if isinstance(request, BaseModel):
        return request.model_dump_json().encode()
    return json.dumps({k: v for k, v in request.items() if v is not None}).encode()


async def call(
    nc: NatsClient,
    subject: str,
    request: BaseModel | dict[str, Any],
    reply_type: type[ReplyT],
    *,
    service: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    late: str | None = None,
) -> ReplyT:
    """Ask `subject` and read the answer as `reply_type`; an ErrorReply raises RequestError.

    `service` names who answers, for the message when nobody does; `late` replaces the message
    when the answer takes longer than `timeout_s`."""
    payload = encode(request)
    if len(payload) > nc.max_payload:
        raise RequestError(
            "too_large",
            f"the request is {len(payload)} bytes; the NATS server's max_payload is "
            f"{nc.max_payload}",
        )
    try:
        msg = await nc.request(subject, payload, timeout=timeout_s)
    except NoRespondersError:
        raise LlmbusError(f"no answer on {subject}: is the {service} service running?") from None
    except TimeoutError:
        raise LlmbusError(
            late or f"no answer on {subject} within {timeout_s}s: is the {service} service running?"
        ) from None
    return decode(msg.data, reply_type)


class SubClient:
    """A group of a Client's calls, all answered by one service."""

    service: ClassVar[str]

    def __init__(self, client: "Client") -> None:
        self._client = client

    async def _call(
        self,
        subject: str,
        request: BaseModel | dict[str, Any],
        reply_type: type[ReplyT],
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> ReplyT:
        return await call(self._client.nc, subject, request, reply_type, service=self.service,
                          timeout_s=timeout_s)  # fmt: skip


def decode(data: bytes, reply_type: type[ReplyT]) -> ReplyT:
    # the reply type first: a ChatReply has an error_type field of its own, and is no error
    try:
        return reply_type.model_validate_json(data)
    except ValidationError:
        error = ErrorReply.model_validate_json(data)
        raise RequestError(error.error_type, error.message) from None


def dumpable(value: Any) -> Any:
    """Pydantic values (a Variable, ChatTurns) as plain JSON data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [dumpable(v) for v in value]
    return value
