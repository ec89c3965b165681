"""Group commit: many concurrent writes become few transactions on one writer thread."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """While one batch is being written, new items queue up and go in the next transaction.

    `write_batch` gets a list of items and returns one result per item, in order. It runs on a
    thread of its own, so the writes never queue behind other work in the default pool.
    """

    def __init__(self, write_batch: Callable[[list[T]], list[R]], name: str) -> None:
        self._write_batch = write_batch
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def write(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(self._writer, self._write_batch, items)
                except Exception as exc:
                    answer(batch, exc)
                    continue
                self.batches += 1
                self.items += len(batch)
                answer(batch, results)
        finally:
            self._flushing = None

    def close(self) -> None:
        self._writer.shutdown(wait=True)


class TickBatch(Generic[T, R]):
    """Writes asked for in the same turn of the event loop go in one transaction, on the loop.

    For a local store whose writes cost less than a thread hop (SQLite): the requests of one
    fetch reach this together, and share one BEGIN and COMMIT. A lone write waits for nothing
    but the callbacks already queued."""

    def __init__(self, write_batch: Callable[[list[T]], list[R]]) -> None:
        self._write_batch = write_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self.batches = 0
        self.items = 0

    async def write(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            results = self._write_batch([item for item, _ in batch])
        except Exception as exc:
            answer(batch, exc)
            return
        self.batches += 1
        self.items += len(batch)
        answer(batch, results)


def answer(batch: list[tuple[T, "asyncio.Future[R]"]], outcome: list[R] | Exception) -> None:
    """Each writer of a batch gets its own result, or the batch's error."""
    if not isinstance(outcome, Exception) and len(outcome) != len(batch):
        outcome = RuntimeError(f"a batch of {len(batch)} writes gave {len(outcome)} results")
    for i, (_, future) in enumerate(batch):
        if future.done():
            continue  # its caller was cancelled meanwhile
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[i])
