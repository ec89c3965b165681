"""The completion service process: worker + outbox relay over one event store."""

import asyncio
import logging

from nats.aio.client import Client as NatsClient

from llmbus.services.completion.application import CompletionApplication
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.outbox import TOPICS, route
from llmbus.services.completion.worker import CompletionWorker
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.eventstore import SQLiteProbe, sqlite_probe
from llmbus.shared.lifecycle import serve_service
from llmbus.shared.limits import Limits
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.completion")


class CompletionService:
    def __init__(
        self,
        settings: Settings,
        app: CompletionApplication,
        nc: NatsClient,
        gateway: ModelGateway,
        probe: SQLiteProbe | None,
    ) -> None:
        self.nc = nc
        self.limits = Limits(settings.completion.max_request_bytes, nc.max_payload)
        self.probe = probe
        self.relay = OutboxRelay(
            app, nc.jetstream(), route, service="completion", name="completion-outbox",
            on_loop=probe is not None, topics=TOPICS,
        )  # fmt: skip
        self.worker = CompletionWorker(settings, app, gateway, nc, self.relay, probe)

    async def start(self) -> None:
        log.info(
            "requests may take %d bytes (%s)",
            self.limits.request_bytes, self.limits.request_limit_text(),
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        await self.worker.run(stop)

    async def close(self) -> None:
        if self.probe is not None:
            self.probe.close()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async def build(app: CompletionApplication, nc: NatsClient) -> CompletionService:
        catalog = ModelCatalog(settings)
        await asyncio.to_thread(catalog.warm_up)
        gateway = ModelGateway(settings, catalog)
        return CompletionService(settings, app, nc, gateway, sqlite_probe(settings, "completion"))

    await serve_service(settings, stop, "completion", CompletionApplication, build)
