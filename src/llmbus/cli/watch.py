"""`llmbus budgets watch`: budget events as they happen, across restarts of the stack.

nats-py reconnects only to the servers it was given. `llmbus up` picks a free port each time it
starts and writes it to the state folder's nats.url, so after a restart the old address is dead
for good: while the connection is down, the watch re-reads nats.url and moves when it changes,
resuming after the last event it printed."""

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from llmbus.client import Client
from llmbus.shared import bus
from llmbus.shared.errors import NotReachableError
from llmbus.shared.settings import Settings

POLL_S = 0.5  # how often a watch that lost its server looks at nats.url again


class BudgetWatch:
    def __init__(
        self,
        settings: Settings,
        budget: str | None,
        out: Callable[[str], None],
        note: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.out = out  # one JSON event a line
        self.note = note  # what the watch is doing, for the person watching
        self.next_sequence: int | None = None  # None: from now on

    async def run(self) -> None:
        """Until cancelled (Ctrl-C)."""
        waiting_for = ""
        while True:
            url = bus.resolve_nats_url(self.settings)
            try:
                client = Client(url, settings=self.settings)
                await client.connect()
            except NotReachableError:
                if url != waiting_for:
                    self.note(f"waiting for NATS at {url}…")
                    waiting_for = url
                await asyncio.sleep(POLL_S)
                continue
            waiting_for = ""
            try:
                self.note(f"watching budget events on {url} (Ctrl-C stops)…")
                await first_of(self.follow(client), self.moved(client, url))
            finally:
                await client.close()

    async def follow(self, client: Client) -> None:
        events = client.budgets.sequenced_events(self.budget, start_sequence=self.next_sequence)
        async for sequence, event in events:
            self.next_sequence = sequence + 1
            self.out(event.model_dump_json())

    async def moved(self, client: Client, url: str) -> None:
        """Returns once the connection is down and nats.url names another server."""
        while True:
            await asyncio.sleep(POLL_S)
            if client.nc.is_connected:
                continue
            current = self.settings.nats_url or bus.state_nats_url(self.settings)
            if current and current != url:
                self.note(f"the stack moved to {current}")
                return


async def first_of(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run them together until the first ends; cancel the rest. The first's error is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            # a subscription torn down on a dead connection may complain; the watch goes on
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        task.result()
