"""Prometheus metrics: every metric llmbus exposes, in the process's one registry (the official
client's default), served in the text exposition format.

Labels stay bounded: a model label is a name of the catalog (`MODELS`), anything else `other`;
a budget is labelled by its name, which an admin chose; never a user, team or request id.
A service serves its registry on `<service>.metrics_port` (MetricsExporter); the gateway serves
`exposition()` on its own /metrics.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from nats.js import JetStreamContext
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.exposition import choose_encoder

from llmbus.shared.errors import ConfigError
from llmbus.shared.failover import describe

log = logging.getLogger("llmbus.metrics")

OTHER = "other"  # the model label of a name outside the catalog, or of none
# LLM calls: from a cached reply in tens of ms to a long generation at the default 120 s timeout
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
POLL_S = 5.0  # how often the JetStream and service gauges are read
PROJECTION_LAG_CAP = 10_000  # counting further would read that many events every poll
M = TypeVar("M", Counter, Gauge, Histogram)

# a *_created series beside each counter and histogram: twice the series, for a timestamp that
# Prometheus' text format does not use
disable_created_metrics()


class Family(Generic[M]):
    """A labelled metric, with its children kept by label values: after the first update, one
    dict lookup (the client's labels() takes a lock and checks every value each time)."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        if self._children.pop(values, None) is not None:
            self.metric.remove(*values)


class ModelNames:
    """The names a model label may take: the catalog's (configured and built-in) and the models
    of the configured roles. A request naming anything else counts under `other`."""

    def __init__(self) -> None:
        self._known: frozenset[str] = frozenset()

    def allow(self, names: Iterable[str]) -> None:
        self._known |= frozenset(names)

    def label(self, model: str | None) -> str:
        return model if model is not None and model in self._known else OTHER


MODELS = ModelNames()

REQUESTS = Family(
    Counter(
        "llmbus_requests_total",
        "Requests ended, by the service that ended them, their model and status "
        "(received or failed).",
        ["service", "model", "status"],
    )
)
LATENCY = Family(
    Histogram(
        "llmbus_request_latency_seconds",
        "Duration of each provider call that answered, retries included.",
        ["model"],
        buckets=CALL_BUCKETS,
    )
)
TIME_TO_FIRST_TOKEN = Family(
    Histogram(
        "llmbus_time_to_first_token_seconds",
        "Time from the start of a streamed call to its first delta.",
        ["model"],
        buckets=CALL_BUCKETS,
    )
)
TOKENS = Family(
    Counter(
        "llmbus_tokens_total",
        "Tokens of paid provider calls, by kind: prompt, completion, and cached (the part of "
        "the prompt tokens read from the provider's cache).",
        ["model", "kind"],
    )
)
COST = Family(Counter("llmbus_cost_usd_total", "Cost of paid provider calls, in USD.", ["model"]))
ERRORS = Family(
    Counter(
        "llmbus_errors_total",
        "Requests that ended in an error, by the service and the error type it gave.",
        ["service", "error_type"],
    )
)
IN_FLIGHT = Family(
    Gauge(
        "llmbus_requests_in_flight",
        "Requests a service holds now: taken and not yet answered.",
        ["service"],
    )
)
QUEUE_DEPTH = Family(
    Gauge(
        "llmbus_queue_depth",
        "Messages of the stream not yet delivered to the consumer (JetStream num_pending).",
        ["stream", "consumer"],
    )
)
CONSUMER_LAG = Family(
    Gauge(
        "llmbus_consumer_lag",
        "Messages delivered to the consumer and not acked yet: being handled, or due for "
        "redelivery (JetStream num_ack_pending).",
        ["stream", "consumer"],
    )
)
BUDGET_SPENT = Family(
    Gauge(
        "llmbus_budget_spent_usd",
        "Spent in the budget's current window, in USD.",
        ["budget", "scope"],
    )
)
BUDGET_LIMIT = Family(
    Gauge("llmbus_budget_limit_usd", "The budget's limit per window, in USD.", ["budget", "scope"])
)
PROJECTION_LAG = Gauge(
    "llmbus_projection_lag_events",
    f"Usage events stored and not yet in the DuckDB projection (counted up to "
    f"{PROJECTION_LAG_CAP}).",
)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The process's metrics as a scrape answer: the body and its Content-Type, in the format
    the scraper's Accept header asks for (Prometheus text by default, or OpenMetrics)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(REGISTRY), content_type


def serve_http(host: str, port: int) -> WSGIServer:
    """The exposition server on host:port, on a daemon thread; ConfigError if it cannot bind."""
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return server


Refresh = tuple[str, Callable[[], Awaitable[None]]]  # what it reads (for the log), and how


class MetricsExporter:
    """A service's metrics while it runs: the exposition server on its port, and every POLL_S
    the gauges read from elsewhere: its JetStream consumers, and what `refresh` reads from the
    service. Off when the service has no port. A failing read is logged once (and its
    recovery), and never stops the service."""

    def __init__(
        self,
        service: str,
        port: int | None,
        host: str,
        consumers: Sequence[tuple[str, str]] = (),
        refresh: Sequence[Refresh] = (),
    ) -> None:
        self.service = service
        self.port = port
        self.host = host
        self.consumers = consumers
        self.refresh = refresh
        self._server: WSGIServer | None = None
        self._polling: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    def start(self, js: JetStreamContext) -> None:
        if self.port is None:
            return
        self._server = serve_http(self.host, self.port)
        log.info("%s metrics at http://%s:%d/metrics", self.service, self.host, self.port)
        self._polling = asyncio.create_task(self._poll(js), name=f"{self.service}-metrics")

    async def stop(self) -> None:
        """Stop polling (before the connection drains), then serving. Safe to call twice."""
        polling, self._polling = self._polling, None
        if polling is not None:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # waits for serve_forever's loop to end
            server.server_close()

    async def _poll(self, js: JetStreamContext) -> None:
        while True:
            await self.poll_once(js)
            await asyncio.sleep(POLL_S)

    async def poll_once(self, js: JetStreamContext) -> None:
        for stream, consumer in self.consumers:
            await self._read(f"consumer {stream}/{consumer}", self._consumer(js, stream, consumer))
        for what, read in self.refresh:
            await self._read(what, read())

    async def _consumer(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        info = await js.consumer_info(stream, consumer, timeout=POLL_S)
        QUEUE_DEPTH(stream, consumer).set(info.num_pending or 0)
        CONSUMER_LAG(stream, consumer).set(info.num_ack_pending or 0)

    async def _read(self, what: str, reading: Awaitable[None]) -> None:
        try:
            await reading
        except Exception as exc:
            if what not in self._failing:
                self._failing.add(what)
                log.warning("metrics: cannot read %s (%s); retrying quietly", what, describe(exc))
            return
        if what in self._failing:
            self._failing.discard(what)
            log.info("metrics: %s can be read again", what)
