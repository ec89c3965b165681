"""A worker killed (SIGKILL) mid-stream: another takes the request once the first one's claim
lapses, streams it again from the start as the next attempt, and the request ends exactly once."""

import signal
from pathlib import Path

from llmbus.client import Client
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.settings import Settings
from support import (
    completion_service_ready,
    connected,
    running,
    spawn_service,
    stop_process,
    wait_for,
    watching_events,
)

# a short lease and ack wait: the second worker takes over within seconds
FAST_TAKEOVER = {"LLMBUS_CLAIM_LEASE_S": "2", "LLMBUS_ACK_WAIT_S": "1"}


async def test_a_worker_killed_mid_stream_leaves_the_request_to_end_exactly_once(
    settings: Settings, config_file: Path, tmp_path: Path
) -> None:
    first = spawn_service("completion", config_file, tmp_path / "first.log", **FAST_TAKEOVER)
    second = None
    try:
        async with (
            connected(settings) as nc,
            watching_events(nc) as events,
            running(serve_usage, settings),
            Client(settings=settings) as client,
        ):
            await wait_for(lambda: completion_service_ready(nc), 60, "the first worker")
            stream = client.stream("count slowly", model="drip-40-60")
            chunks: list[CompletionChunk] = []
            async for chunk in stream:
                chunks.append(chunk)
                if len(chunks) == 5 and second is None:
                    stop_process(first, signal.SIGKILL)
                    second = spawn_service("completion", config_file, tmp_path / "second.log",
                                           **FAST_TAKEOVER)  # fmt: skip
            assert stream.result is not None
            assert [c.attempt for c in chunks[:5]] == [1] * 5
            retaken = [c for c in chunks if c.attempt > 1]
            assert [c.index for c in retaken] == list(range(len(retaken)))
            assert retaken[-1].final
            assert "".join(c.delta for c in retaken) == stream.result.content
            await events.wait_terminal(1)
            ends = [e for e in events.terminal() if e["request_id"] == stream.request_id]
            assert len(ends) == 1 and ends[0]["content"] == stream.result.content
    finally:
        stop_process(first, signal.SIGKILL)
        if second is not None:
            stop_process(second)
