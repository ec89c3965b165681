"""The completion service process: worker + outbox relay over one event store."""

import asyncio
import logging

from nats.aio.client import Client as NatsClient

from llmbus.services.completion.application import CompletionApplication
from llmbus.services.completion.credentials import CredentialCheck
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.handlers import CompletionHandlers, completion_router
from llmbus.services.completion.metering import completion_metrics
from llmbus.services.completion.outbox import TOPICS, route
from llmbus.services.completion.prices import PriceFollower
from llmbus.services.completion.tracking import Tracking
from llmbus.services.completion.worker import CompletionWorker
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.eventstore import SQLiteProbe, sqlite_probe
from llmbus.shared.lifecycle import serve_service
from llmbus.shared.limits import Limits
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.rpc import SharedConnectionBroker
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
        self.credentials = CredentialCheck(settings, gateway.catalog, gateway.health)
        self.prices = PriceFollower(nc, gateway.catalog)
        self._watching: asyncio.Task[None] | None = None
        self.metrics = completion_metrics(settings.completion, self.worker.router)
        # requests (estimates) are served on this process's one connection
        self.broker = SharedConnectionBroker(nc)
        handlers = CompletionHandlers(self.worker.router, self.worker.prompts, nc)
        clients = ClientDirectory(nc.jetstream())
        tracking = Tracking(app, nc)
        self.broker.include_router(
            completion_router(handlers, tracking, lambda: nc.max_payload, clients)
        )

    async def start(self) -> None:
        self.metrics.start(self.nc.jetstream())  # first: a port in use stops the start
        log.info(
            "requests may take %d bytes (%s)",
            self.limits.request_bytes, self.limits.request_limit_text(),
        )  # fmt: skip
        await self.check_credentials()
        await self.prices.start()
        await self.broker.start()

    async def check_credentials(self) -> None:
        """The first credential check: bounded by its timeout, and never fatal to the worker."""
        try:
            # the check returns at its timeout; the margin only guards against a hang in it
            await asyncio.wait_for(self.credentials.check(), self.credentials.timeout_s + 1.0)
        except Exception:
            log.exception("the credential check failed; the worker starts without it")

    async def run(self, stop: asyncio.Event) -> None:
        self._watching = asyncio.create_task(
            self.credentials.watch(stop), name="credential-recheck"
        )
        try:
            await self.worker.run(stop)
        finally:
            await self.broker.stop()  # answers the requests in hand
            await self._stop_watching()
            await self.prices.stop()
            await self.metrics.stop()

    async def _stop_watching(self) -> None:
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    async def close(self) -> None:
        await self._stop_watching()
        await self.metrics.stop()  # if it started, and run never did
        if self.probe is not None:
            self.probe.close()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async def build(app: CompletionApplication, nc: NatsClient) -> CompletionService:
        catalog = ModelCatalog(settings)
        await asyncio.to_thread(catalog.warm_up)
        gateway = ModelGateway(settings, catalog)
        return CompletionService(settings, app, nc, gateway, sqlite_probe(settings, "completion"))

    await serve_service(settings, stop, "completion", CompletionApplication, build)
