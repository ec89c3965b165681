"""Tells JetStream that requests still being worked on are alive, so it does not redeliver them.

nats-py sends no heartbeats of its own: whatever may take a while (waiting on another worker's
claim, rendering a prompt, waiting for budget room, the model call) runs under `during`.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from nats.aio.msg import Msg

T = TypeVar("T")


class Heartbeat:
    def __init__(self, ack_wait_s: float) -> None:
        self.every_s = ack_wait_s / 3
        self.working: dict[int, tuple[Msg, float]] = {}

    async def during(self, msg: Msg, call: Awaitable[T]) -> T:
        self.working[id(msg)] = (msg, time.monotonic())
        try:
            return await call
        finally:
            del self.working[id(msg)]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            due = time.monotonic() - self.every_s
            for msg, since in list(self.working.values()):
                if since <= due:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
