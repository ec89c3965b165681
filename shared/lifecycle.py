"""The one lifecycle of a service process: store → connect → provision → relay → consume →
drain. A service says what it builds and runs; the order, and what is closed on the way out
(whatever failed), live here."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from eventsourcing.application import Application
from nats.aio.client import Client as NatsClient

from llmbus.shared import bus
from llmbus.shared.eventstore import open_store
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.lifecycle")
App = TypeVar("App", bound=Application)


class Service(Protocol):
    @property
    def relay(self) -> OutboxRelay:
        """Publishes what the service stores: the outbox."""

    async def start(self) -> None:
        """Once JetStream is provisioned: load what it needs, then start serving requests."""

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`, then stop taking requests and answer those in hand."""

    async def close(self) -> None:
        """Release what it holds besides the store and the connection."""


async def serve_service(
    settings: Settings,
    stop: asyncio.Event,
    name: str,
    application: type[App],
    build: Callable[[App, NatsClient], Awaitable[Service]],
) -> None:
    """Run the `name` service until `stop`: its store is opened first and closed last, and its
    relay publishes everything stored before the connection drains."""
    app = await asyncio.to_thread(open_store, application, settings, name)
    try:
        nc = await bus.connect(settings, f"llmbus-{name}")
        service: Service | None = None
        try:
            service = await build(app, nc)
            await bus.provision(nc.jetstream(), settings)
            await service.start()
            await run_with_relay(service, stop)
            log.info("%s service stopped; %d published", name, service.relay.published)
        finally:
            try:
                await nc.drain()  # after a failure too: no request reaches a closed service
            finally:
                # a drain that fails (NATS down) must not leave DuckDB or a probe open
                if service is not None:
                    await service.close()
    finally:
        app.close()


async def run_with_relay(service: Service, stop: asyncio.Event) -> None:
    relay_stop = asyncio.Event()
    relaying = asyncio.create_task(service.relay.run(relay_stop))
    try:
        await service.run(stop)
    finally:
        # what the last requests stored is published before the connection drains
        relay_stop.set()
        service.relay.poke()
        await relaying
