"""How a service process runs: logging, signals, and a clean drain on Ctrl-C or SIGTERM."""

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.runtime")

ServiceMain = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


# Third-party loggers whose DEBUG and INFO records can print provider keys (request or response
# headers), message contents (request bodies) or stored events: held at WARNING whatever
# LLMBUS_LOG_LEVEL says. The openai SDK at DEBUG prints response headers and request bodies;
# httpcore, hpack and h2 print headers; botocore signed requests; litellm the messages. nats-py
# logs no payloads and is not held.
HELD_LOGGERS = (
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
    "litellm",
    "openai",
    "anthropic",
    "httpx",
    "httpcore",
    "hpack",
    "h2",
    "aiohttp",
    "urllib3",
    "botocore",
    "boto3",
    "google",
    "eventsourcing",
    "psycopg",
    "asyncio",
)
HELD_PREFIXES = tuple(f"{name}." for name in HELD_LOGGERS)


def held(name: str) -> bool:
    return name in HELD_LOGGERS or name.startswith(HELD_PREFIXES)


class HoldAtWarning(logging.Filter):
    """Drops a held logger's records below WARNING, even after a library lowers its level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not held(record.name)


HOLD = HoldAtWarning()


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    hold_third_party_loggers()


def hold_third_party_loggers() -> None:
    """The level stops the records being made; the filter, on root's handlers and on the handler
    litellm gives its own loggers, catches any a library lets through later (`OPENAI_LOG=debug`
    at the openai SDK's import, `litellm._turn_on_debug()`). Run it after the service's imports,
    as run_service does: the openai SDK and litellm set levels when imported."""
    for name in HELD_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        for handler in logger.handlers:
            handler.addFilter(HOLD)
    for handler in logging.getLogger().handlers:
        handler.addFilter(HOLD)
    # says, to whoever turned DEBUG on, where the provider SDK's own debug output went
    log.debug("third-party loggers held at WARNING: %s", ", ".join(HELD_LOGGERS))


def run_service(main: ServiceMain, settings: Settings) -> None:
    configure_logging(settings)
    settle_heap()

    async def supervise() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    # uvloop: the same asyncio API at a fraction of the stock loop's cost per socket read,
    # write and callback, which a request pays at every hop (NATS, HTTP, the provider)
    uvloop.run(supervise())


def settle_heap() -> None:
    """Moves what the imports built (some 400 k objects in the worker, litellm's mostly) to the
    permanent generation, which collections skip: a full collection then walks only what the
    service made since (26 ms in the worker, against 222 ms), and pauses the requests in hand
    for that long."""
    gc.collect()
    gc.freeze()
