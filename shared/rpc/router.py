"""RpcRouter: a service's request/reply subjects, each a typed handler."""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from faststream.nats import NatsMessage, NatsRouter
from faststream.nats.subscriber.usecases.core_subscriber import CoreSubscriber
from nats.aio.msg import Msg
from pydantic import BaseModel

from llmbus.shared import subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import ForbiddenError
from llmbus.shared.rpc.metering import RpcMeter
from llmbus.shared.rpc.replies import ReplyMiddleware, outcome, reply_bytes

Request = TypeVar("Request", bound=BaseModel)
Handler = Callable[[Request], Awaitable[BaseModel | None]]


class RpcRouter(NatsRouter):
    """The subjects one service answers, in its queue group, behind the one ReplyMiddleware.

    A public subject (subjects.CLIENT_SUBJECTS) is also heard as clients send it, under their
    names (llmbus.in.<client>.<...>): the handler then runs with that client as its caller
    (shared.identity), looked up in `clients`. `metered`: its requests in flight and its error
    replies are counted under the service's name (docs/metrics.md)."""

    def __init__(
        self,
        service: str,
        queue: str,
        max_payload: Callable[[], int],
        clients: ClientDirectory | None = None,
        *,
        metered: bool = False,
    ) -> None:
        self.meter = RpcMeter(service) if metered else None
        middleware = partial(
            ReplyMiddleware, service=service, max_payload=max_payload, caller_of=self.caller_of,
            meter=self.meter,
        )  # fmt: skip
        super().__init__(middlewares=[middleware])
        self.service = service
        self.queue = queue
        self.max_payload = max_payload
        self.clients = clients

    async def caller_of(self, subject: str) -> ClientIdentity | None:
        name = subjects.client_of(subject)
        if name is None:
            return None  # llmbus's own account: a service or the operator
        if self.clients is None:
            raise ForbiddenError(f"the {self.service} service takes no requests from clients")
        return await self.clients.identity(name)

    def answer(
        self, subject: str, handler: Handler[Any], *, queue: str | None = None, hot: bool = False
    ) -> None:
        """Serve `subject` with `handler`: its request model is read from its signature, and
        what it returns is the reply. Each request is answered in a task of its own.

        `hot`: a subject on every request's path (budget.reserve, budget.settle). On a live
        connection its messages skip FastStream's per-message machinery (context scopes,
        logging and acknowledgement middlewares, response publisher) for the same decode,
        handler, error mapping and reply: that machinery cost the usage service a quarter of
        its CPU under load (docs/decisions/0002). It is declared, documented and unit-tested
        like any other subject."""
        subscriber = self._subscribe(subject, handler, queue)
        dispatch(subscriber, self._lean(subject, handler) if hot else None, concurrent=True)
        if subject in subjects.CLIENT_SUBJECTS:
            from_clients = self._subscribe(subjects.from_client(subject), handler, queue)
            dispatch(from_clients, None, concurrent=True)

    def listen(
        self, subject: str, handler: Handler[Any], *, queue: str | None = None, hot: bool = False
    ) -> None:
        """Take fire-and-forget messages on `subject`, one at a time, in arrival order; one that
        is invalid is logged and dropped. `queue=""`: every replica hears every message.
        `hot`: as for `answer`."""
        subscriber = self._subscribe(subject, handler, queue)
        if hot:
            dispatch(subscriber, self._lean(subject, handler), concurrent=False)

    def _lean(self, subject: str, handler: Handler[Any]) -> Callable[[Msg], Awaitable[None]]:
        model = request_model(handler)

        async def read_and_handle(data: bytes) -> BaseModel | None:
            return await handler(read_request(model, data))

        async def answer(msg: Msg) -> None:
            reply = await outcome(read_and_handle(msg.data), subject, self.service, self.meter)
            if reply is None:
                return  # a subscription answers nothing
            payload = reply_bytes(reply, subject, bool(msg.reply), self.max_payload(), self.meter)
            if msg.reply:
                await msg.respond(payload)

        return answer

    def _subscribe(self, subject: str, handler: Handler[Any], queue: str | None) -> CoreSubscriber:
        subscriber = self.subscriber(
            subject,
            queue=self.queue if queue is None else queue,
            decoder=request_decoder(request_model(handler)),
            description=inspect.getdoc(handler),
        )
        subscriber(handler)
        assert isinstance(subscriber, CoreSubscriber)
        return subscriber


def dispatch(
    subscriber: CoreSubscriber,
    lean: Callable[[Msg], Awaitable[None]] | None,
    *,
    concurrent: bool,
) -> None:
    """How a subscriber's messages are handled: through FastStream (`lean` None) or the lean
    path; each in a task of its own (`concurrent`), or one after another in arrival order.

    Concurrent: a slow request (a chat turn waiting for its outcome) holds up no other, and
    reservations arriving together reach the admission desk together and share its batch.
    FastStream's `max_workers` does the same through a memory stream, a semaphore and a task
    group: measured here, 0.2 ms more per round trip. Stopping waits for the messages in hand
    either way (FastStream counts them in `process_message`; the lean path under the same lock).
    """
    in_flight: set[asyncio.Task[Any]] = set()

    async def handle(msg: Msg) -> None:
        if lean is None:
            await subscriber.consume(msg)
        elif subscriber.running:
            with subscriber.lock:
                await lean(msg)

    async def on_message(msg: Msg) -> None:
        if not concurrent:
            await handle(msg)  # nats-py calls back one message at a time
            return
        task = asyncio.create_task(handle(msg))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    async def create_subscription() -> None:
        if subscriber.subscription is None:
            subscriber.subscription = await subscriber.connection.subscribe(
                subject=subscriber.subject.broker_address,
                queue=subscriber.queue,
                cb=on_message,
                **subscriber.extra_options,
            )

    # the one FastStream internal llmbus replaces (faststream is pinned; tests cover it)
    subscriber._create_subscription = create_subscription  # type: ignore[method-assign]


def request_model(handler: Callable[..., Any]) -> type[BaseModel]:
    parameters = list(inspect.signature(handler, eval_str=True).parameters.values())
    model = parameters[0].annotation if len(parameters) == 1 else None
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(f"{handler} must take one argument, typed by a pydantic model")
    return model


def request_decoder(model: type[BaseModel]) -> Callable[[NatsMessage], Awaitable[BaseModel]]:
    # pydantic parses the bytes itself: faster than json.loads and a second pass, bounded in
    # depth, and its errors say where the JSON broke
    async def decode(msg: NatsMessage) -> BaseModel:
        return read_request(model, msg.body)

    return decode


def read_request(model: type[BaseModel], body: bytes) -> BaseModel:
    return model.model_validate_json(body or b"{}")  # an empty body asks with every default
