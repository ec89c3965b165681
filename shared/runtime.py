"""How a service process runs: logging, signals, and a clean drain on Ctrl-C or SIGTERM."""

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from llmbus.shared.settings import Settings

ServiceMain = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("LiteLLM", "litellm", "httpx", "eventsourcing"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_service(main: ServiceMain, settings: Settings) -> None:
    configure_logging(settings)

    async def supervise() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    asyncio.run(supervise())
