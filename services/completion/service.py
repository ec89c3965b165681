"""The completion service process: worker + outbox relay over one event store."""

import asyncio
import logging

from llmbus.services.completion.application import CompletionApplication
from llmbus.services.completion.gateway import ModelGateway
from llmbus.services.completion.outbox import TOPICS, route
from llmbus.services.completion.worker import CompletionWorker
from llmbus.shared import bus
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.eventstore import open_store, sqlite_probe
from llmbus.shared.limits import Limits
from llmbus.shared.outbox import OutboxRelay
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.completion")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    app = await asyncio.to_thread(open_store, CompletionApplication, settings, "completion")
    catalog = ModelCatalog(settings)
    gateway = ModelGateway(settings, catalog)
    await asyncio.to_thread(catalog.warm_up)
    probe = sqlite_probe(settings, "completion")
    nc = await bus.connect(settings, "llmbus-completion")
    limits = Limits(settings.completion.max_request_bytes, nc.max_payload)
    log.info("requests may take %d bytes (%s)", limits.request_bytes, limits.request_limit_text())
    try:
        js = nc.jetstream()
        await bus.provision(js, settings)
        relay = OutboxRelay(
            app, js, route, service="completion", name="completion-outbox",
            on_loop=probe is not None, topics=TOPICS,
        )  # fmt: skip
        relay_stop = asyncio.Event()
        relaying = asyncio.create_task(relay.run(relay_stop))
        await CompletionWorker(settings, app, gateway, nc, relay, probe).run(stop)
        relay_stop.set()
        relay.poke()
        await relaying
        log.info("completion service stopped; %d events published", relay.published)
    finally:
        await nc.drain()
        if probe is not None:
            probe.close()
        app.close()
