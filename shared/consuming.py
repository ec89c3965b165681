"""Pulling from a JetStream durable consumer: the loop a service consumes its events with
(`consume`), and one fetch that rides out a failover (`fetch`)."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from llmbus.shared.failover import Backoff, is_transient

log = logging.getLogger("llmbus.bus")


@dataclass(frozen=True)
class Linger:
    """For a consumer off the request path: after a fetch of fewer than `below` messages, wait
    `seconds` before the next, so that it brings what came meanwhile in one go. At low rates
    each message is then handled up to `seconds` later, with fewer pulls, wakeups and
    transactions per message; at rates that fill `below`, nothing waits."""

    seconds: float
    below: int


async def consume(
    js: JetStreamContext,
    durable: str,
    stream: str,
    handle: Callable[[list[Msg]], Awaitable[None]],
    stop: asyncio.Event,
    batch: int,
    what: str,
    linger: Linger | None = None,
) -> None:
    """Fetch batches from a durable pull consumer until `stop`. `handle` acks what it stored; a
    batch it fails on stays unacked, and JetStream redelivers it after a pause."""
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    backoff = Backoff(f"fetching {what}")
    try:
        while not stop.is_set():
            msgs = await fetch(sub, batch, 0.5, backoff)
            if not msgs:
                continue
            try:
                await handle(msgs)
            except Exception as exc:
                if is_transient(exc):  # NATS failing over: no reason for a traceback
                    await backoff.wait(exc)
                    continue
                log.exception("handling %d %s failed; they will be redelivered", len(msgs), what)
                await asyncio.sleep(1.0)
                continue
            if linger is not None and len(msgs) < linger.below:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), linger.seconds)
    finally:
        # a pull subscription with a fetch outstanding would hold up the connection's drain
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def fetch(
    sub: JetStreamContext.PullSubscription, batch: int, timeout: float, backoff: Backoff
) -> list[Msg]:
    """Up to `batch` messages; none when `timeout` passes first, or when NATS is failing over
    (then after a pause: see `Backoff`). Other errors are raised."""
    try:
        msgs = await sub.fetch(batch=batch, timeout=timeout)
    except (NatsTimeoutError, TimeoutError):
        msgs = []  # nothing to fetch; a consumer without a leader answers 503 at once instead
    except Exception as exc:
        if not is_transient(exc):
            raise
        await backoff.wait(exc)
        return []
    backoff.succeeded()
    return msgs
