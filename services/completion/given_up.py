"""Requests JetStream gave up on: delivered max_deliver times, each time to a worker that died
while handling it. Each is ended here, so that every accepted request ends."""

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from llmbus.services.completion.parse import Rejected, salvage_request_id
from llmbus.services.completion.reply import Reply, reply_subject, stored_reply
from llmbus.services.completion.store import CompletionStore
from llmbus.shared import bus, consuming, subjects
from llmbus.shared.contracts import ErrorType

log = logging.getLogger("llmbus.completion")


class GivenUp:
    def __init__(self, js: JetStreamContext, store: CompletionStore, reply: Reply) -> None:
        self.js = js
        self.store = store
        self.reply = reply

    async def watch(self, stop: asyncio.Event) -> None:
        sub = await self.js.pull_subscribe_bind(
            durable=subjects.GAVE_UP_CONSUMER, stream=subjects.ADVISORIES_STREAM
        )
        backoff = bus.Backoff("fetching max-deliveries advisories")
        try:
            while not stop.is_set():
                advisories = await consuming.fetch(sub, 16, 1.0, backoff)
                for advisory in advisories:
                    try:
                        await self.end(json.loads(advisory.data))
                        await advisory.ack()
                    except Exception:
                        log.exception("could not end a request JetStream gave up on")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def end(self, notice: dict[str, Any]) -> None:
        seq = int(notice["stream_seq"])
        try:
            stored = await self.js.get_msg(subjects.REQUESTS_STREAM, seq)
        except NotFoundError:
            return  # acked after all, or already ended by another worker
        data = stored.data or b""
        reply_to = reply_subject(stored.headers)
        request_id = salvage_request_id(data)
        done = await asyncio.to_thread(self.store.app.find, request_id) if request_id else None
        if done is not None and done.is_terminal:
            # its worker stored the outcome, then died before acking
            await self.reply.publish(reply_to, stored_reply(done))
        else:
            rejected = Rejected(
                ErrorType.internal,
                f"request was delivered {notice.get('deliveries', '?')} times and no worker "
                "finished it (each stopped while handling it); llmbus gave up",
                request_id,
            )
            await self.reply.fail(data, stored.subject or "", seq, rejected, reply_to)
        await self.js.delete_msg(subjects.REQUESTS_STREAM, seq)
