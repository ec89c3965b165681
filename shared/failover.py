"""How a service rides out a NATS failover, a restart or a slow server: which errors are worth
waiting out, and how long to wait between tries. Logged once per outage, not once per try."""

import asyncio
import logging
import random
import time

from nats.aio.client import Client as NatsClient
from nats.errors import (
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

log = logging.getLogger("llmbus.bus")

# A closed or draining connection is not among them: it never comes back.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    NatsTimeoutError,
    TimeoutError,
    ServiceUnavailableError,  # 503: the stream or consumer has no leader right now
    NoStreamResponseError,  # a publish while the stream has no leader
    NoRespondersError,  # the JetStream API of a server that is (re)starting
    ConnectionReconnectingError,
    StaleConnectionError,
    OutboundBufferLimitError,  # disconnected longer than the reconnect buffer lasts
)
# a publish retried while the first try is still being replicated
DUPLICATE_IN_PROCESS = 10158


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, APIError) and exc.err_code == DUPLICATE_IN_PROCESS


def describe(exc: BaseException) -> str:
    if isinstance(exc, APIError):  # its str() lists every field, None or not
        return " ".join(str(part) for part in (type(exc).__name__, exc.description) if part)
    return str(exc) or type(exc).__name__


class Backoff:
    """Waits between tries while NATS fails over: 0.1 s doubling to 2 s, jittered so that
    workers do not retry in step. The first failure of an outage is logged, and its end."""

    def __init__(self, what: str, first_s: float = 0.1, max_s: float = 2.0) -> None:
        self.what = what
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0
        self.since = 0.0

    async def wait(self, exc: BaseException) -> None:
        if self.failures == 0:
            self.since = time.monotonic()
            log.warning("%s: %s; retrying until NATS answers", self.what, describe(exc))
        self.failures += 1
        delay = min(self.max_s, self.first_s * 2 ** (self.failures - 1))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def succeeded(self) -> None:
        if self.failures:
            log.warning(
                "%s: NATS answers again after %.1f s (%d tries)",
                self.what, time.monotonic() - self.since, self.failures + 1,
            )  # fmt: skip
        self.failures = 0


class ConnectionLog:
    """A connection's errors: the first of an outage at WARNING, the rest of it (every failed
    reconnect attempt to every node) at DEBUG, then where it reconnected."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.down_since: float | None = None
        # set when the server refuses the credentials of a first connect: retrying them would
        # loop for ever (bus.connect gives up); later refusals (a revoked client) are logged
        self.refused = asyncio.Event()
        self.connected_once = False

    async def error(self, exc: Exception) -> None:
        if "authorization violation" in str(exc).lower() and not self.connected_once:
            self.refused.set()
            return
        log.log(logging.DEBUG if self.down_since else logging.WARNING, "nats: %s", describe(exc))

    async def disconnected(self) -> None:
        if self.down_since is None and not self.nc.is_closed:
            self.down_since = time.monotonic()
            log.warning("nats: disconnected; reconnecting")

    async def reconnected(self) -> None:
        down_s = time.monotonic() - (self.down_since or time.monotonic())
        self.down_since = None
        url = self.nc.connected_url
        log.warning("nats: reconnected to %s after %.1f s", url.netloc if url else "?", down_s)
