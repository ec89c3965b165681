"""Workers die and operators press Ctrl-C: every request still ends exactly once."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path

import pytest
import yaml

from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import bus, subjects
from llmbus.shared.natsserver import secured_nats
from llmbus.shared.settings import Settings
from support import (
    completion_service_ready,
    connected,
    requests_in_flight,
    running,
    spawn_service,
    stop_process,
    subject_counts,
    wait_for,
    watching_events,
)

TERMINAL_SUBJECTS = "llmbus.completion.*"


def request(request_id: str, model: str) -> bytes:
    return json.dumps(
        {"request_id": request_id, "model": model, "messages": [{"role": "user", "content": "x"}]}
    ).encode()


async def test_a_worker_killed_with_100_requests_in_flight_loses_and_repeats_nothing(
    settings: Settings, config_file: Path
) -> None:
    total = 150
    worker = spawn_service("completion", config_file, LLMBUS_CONCURRENCY="200")
    replacement = None
    async with (
        connected(settings) as nc,
        watching_events(nc) as events,
        running(serve_usage, settings),
    ):
        js = nc.jetstream()
        try:
            await wait_for(lambda: completion_service_ready(nc), 60, "the first worker")
            for i in range(total):
                await js.publish(subjects.COMPLETION_REQUESTED, request(f"kill-{i}", "slow-1500"))

            async def in_flight() -> bool:
                return await requests_in_flight(nc) >= 100

            await wait_for(in_flight, 30, "100 requests in flight")
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            replacement = spawn_service("completion", config_file, LLMBUS_CONCURRENCY="200")
            await events.wait_terminal(total, timeout=120)
        finally:
            stop_process(worker)
            if replacement is not None:
                # a graceful stop drains its relay: anything it would ever publish is out now
                await asyncio.to_thread(stop_process, replacement)

        counts = await subject_counts(js, "llmbus.>")
        assert counts.get(subjects.COMPLETION_RECEIVED) == total
        assert subjects.COMPLETION_FAILED not in counts
        assert counts.get(subjects.USAGE_RECORDED) == total
        terminal_ids = sorted(e["request_id"] for e in events.terminal())
        assert terminal_ids == sorted(f"kill-{i}" for i in range(total))

        async def usage_projected() -> bool:
            reply = await nc.request(subjects.USAGE_QUERY, b"{}", timeout=5)
            return json.loads(reply.data)["rows"][0]["requests"] == total

        await wait_for(usage_projected, 30, "the usage count to reach the completions")


def up(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmbus", "up"],
        env=os.environ | {"LLMBUS_CONFIG": str(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_ctrl_c_on_llmbus_up_drains_in_flight_work_and_loses_nothing(
    tmp_path: Path, config_file: Path, settings: Settings
) -> None:
    config = yaml.safe_load(config_file.read_text())  # noqa: ASYNC240
    config.pop("nats_url")  # the embedded nats-server this time
    config["state_dir"] = str(tmp_path / "up-state")
    embedded = tmp_path / "embedded.yaml"
    embedded.write_text(yaml.safe_dump(config))
    settings = Settings.model_validate(config)
    url_file = Path(config["state_dir"]) / "nats.url"

    stack = up(embedded)
    try:
        await wait_for(url_file.is_file, 60, "llmbus up to start nats-server")
        settings = settings.model_copy(update={"nats_url": url_file.read_text().strip()})
        async with connected(settings) as nc:
            await wait_for(lambda: completion_service_ready(nc), 60, "the completion worker")
            js = nc.jetstream()
            for i in range(20):
                await js.publish(subjects.COMPLETION_REQUESTED, request(f"drain-{i}", "slow-1500"))

            async def all_in_flight() -> bool:
                return await requests_in_flight(nc) >= 20

            await wait_for(all_in_flight, 30, "20 requests in flight")
        stack.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(stack.communicate, timeout=60)
        assert stack.returncode == 0, output.decode()
        assert not url_file.exists()
    finally:
        stop_process(stack)  # type: ignore[arg-type]

    restarted = up(embedded)
    try:
        await wait_for(url_file.is_file, 60, "llmbus up to start again")
        settings = settings.model_copy(update={"nats_url": url_file.read_text().strip()})
        async with connected(settings) as nc, watching_events(nc) as events:
            # drained before exit: the 20 completed then, not after the restart
            await events.wait_terminal(20, timeout=30)
            info = await nc.jetstream().consumer_info(
                subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER
            )
            assert info.num_pending == 0 and info.num_ack_pending == 0
            assert {e["request_id"] for e in events.terminal()} == {f"drain-{i}" for i in range(20)}
            assert all(e.get("content") for e in events.terminal())
    finally:
        restarted.send_signal(signal.SIGINT)
        await asyncio.to_thread(restarted.communicate, timeout=60)


async def test_a_request_whose_workers_keep_dying_still_ends_in_completion_failed(
    settings: Settings, config_file: Path
) -> None:
    first = spawn_service("completion", config_file, LLMBUS_MAX_DELIVER="1")
    second = None
    async with connected(settings) as nc, watching_events(nc) as events:
        js = nc.jetstream()
        try:
            await wait_for(lambda: completion_service_ready(nc), 60, "the first worker")
            await js.publish(subjects.COMPLETION_REQUESTED, request("doomed-1", "slow-1500"))

            async def in_flight() -> bool:
                return await requests_in_flight(nc) == 1

            await wait_for(in_flight, 30, "the request in flight")
            first.send_signal(signal.SIGKILL)
            first.wait()
            second = spawn_service("completion", config_file, LLMBUS_MAX_DELIVER="1")
            [failed] = await events.wait_terminal(1, timeout=60)
        finally:
            stop_process(first)
            if second is not None:
                await asyncio.to_thread(stop_process, second)
        assert failed["request_id"] == "doomed-1"
        assert failed["error_type"] == "internal" and "no worker finished" in failed["message"]
        assert (await js.stream_info(subjects.REQUESTS_STREAM)).state.messages == 0
        dead = await js.subscribe(
            "llmbus.deadletter.completion",
            stream=subjects.DEAD_LETTER_STREAM,
            ordered_consumer=True,
        )
        letter = await dead.next_msg(timeout=10)
        assert json.loads(letter.data)["request_id"] == "doomed-1"


async def test_two_workers_share_the_queue_and_each_request_completes_once(
    settings: Settings, config_file: Path
) -> None:
    workers = [spawn_service("completion", config_file, LLMBUS_CONCURRENCY="10") for _ in range(2)]
    async with connected(settings) as nc, watching_events(nc) as events:
        js = nc.jetstream()
        try:
            await wait_for(lambda: completion_service_ready(nc), 60, "a worker")
            for i in range(40):
                await js.publish(subjects.COMPLETION_REQUESTED, request(f"shared-{i}", "slow-1500"))

            async def both_busy() -> bool:
                # one worker holds at most 10 at a time: more in flight means both are pulling
                return await requests_in_flight(nc) > 10

            await wait_for(both_busy, 30, "more requests in flight than one worker may hold")
            await events.wait_terminal(40, timeout=60)
        finally:
            for worker in workers:
                await asyncio.to_thread(stop_process, worker)
        counts = await subject_counts(js, "llmbus.>")
        assert counts.get(subjects.COMPLETION_RECEIVED) == 40
        assert counts.get(subjects.USAGE_RECORDED) == 40
        assert sorted(e["request_id"] for e in events.terminal()) == sorted(
            f"shared-{i}" for i in range(40)
        )


async def test_requests_in_flight_when_nats_restarts_still_end_exactly_once(
    tmp_path: Path, config_file: Path, settings: Settings
) -> None:
    if os.environ.get("NATS_URL"):
        pytest.skip("restarts a nats-server of its own; NATS_URL points at a shared one")
    server = secured_nats(tmp_path / "state", tmp_path / "restarting-nats")
    url = server.start()
    port = int(url.rsplit(":", 1)[1])
    config = yaml.safe_load(config_file.read_text())  # noqa: ASYNC240
    config["nats_url"] = url
    restarting = tmp_path / "restarting.yaml"
    restarting.write_text(yaml.safe_dump(config))
    on_it = settings.model_copy(update={"nats_url": url})
    worker = spawn_service("completion", restarting, LLMBUS_CONCURRENCY="100")
    try:
        async with connected(on_it) as nc:
            await bus.provision(nc.jetstream(), on_it)
            await wait_for(lambda: completion_service_ready(nc), 60, "the worker")
            for i in range(30):
                await nc.jetstream().publish(
                    subjects.COMPLETION_REQUESTED, request(f"restart-{i}", "slow-1500")
                )
            await wait_for(lambda: _at_least(requests_in_flight(nc), 30), 30, "30 in flight")
        server.stop()  # mid-call: every request is at the model
        server = secured_nats(tmp_path / "state", tmp_path / "restarting-nats", port=port)
        server.start()
        async with connected(on_it) as nc, watching_events(nc) as events:
            await events.wait_terminal(30, timeout=90)
            await asyncio.to_thread(stop_process, worker)
            counts = await subject_counts(nc.jetstream(), "llmbus.>")
        assert counts.get(subjects.COMPLETION_RECEIVED) == 30
        assert counts.get(subjects.USAGE_RECORDED) == 30
        assert sorted(e["request_id"] for e in events.terminal()) == sorted(
            f"restart-{i}" for i in range(30)
        )
    finally:
        stop_process(worker)
        server.stop()


async def _at_least(count: Awaitable[int], minimum: int) -> bool:
    return await count >= minimum
