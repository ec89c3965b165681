"""A FastStream broker on the process's one NATS connection, made by `bus.connect`."""

import logging
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient

log = logging.getLogger("llmbus.rpc")
# how long stopping waits for the requests in hand to be answered
GRACEFUL_S = 30.0


class SharedConnectionBroker(NatsBroker):
    """Serves on a connection the service already has, instead of dialling its own.

    The service's JetStream consumers and outbox relay use that same nats-py client, so a
    process keeps one connection, with `bus.connect`'s reconnect policy and connection log.
    `stop()` stops the subscribers, waiting for the requests in hand; the connection stays open
    (the service's relay may still publish on it) and the service drains it.
    """

    def __init__(self, nc: NatsClient | None) -> None:
        super().__init__(
            # handlers are typed by the request model RpcRouter decodes: no second validation
            apply_types=False,
            graceful_timeout=GRACEFUL_S,
            logger=log,
            log_level=logging.DEBUG,  # a line per request is noise at INFO
        )
        self._nc = nc

    async def start(self) -> None:
        await super().start()
        # the server knows of every subscription before the service says it is ready
        await self.connection.flush()

    async def stop(self, *args: Any) -> None:
        self._connection = None  # not this broker's to drain
        await super().stop(*args)

    async def _connect(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("this broker serves on a connection it was given; it has none")
        self.config.connect(self._nc)
        return self._nc
