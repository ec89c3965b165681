"""A NATS cluster loses a node: the services wait for its new leaders and go on, losing nothing."""

import asyncio
import json
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from cluster import NatsCluster
from llmbus.shared import bus, subjects
from llmbus.shared.errors import NotReachableError
from llmbus.shared.settings import Settings
from support import spawn_service, stop_process, subject_counts, wait_for, watching_events

TOTAL = 200
STEPDOWN = "$JS.API.{kind}.LEADER.STEPDOWN.{name}"


def request(i: int) -> bytes:
    return json.dumps(
        {"request_id": f"failover-{i}", "model": "slow-200",
         "messages": [{"role": "user", "content": "x"}]}
    ).encode()  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if os.environ.get("NATS_URL"):
        pytest.skip("kills nodes of a nats-server cluster of its own; NATS_URL points elsewhere")
    nodes = NatsCluster(tmp_path / "cluster")
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def cluster_config(
    tmp_path: Path, config_file: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Settings]:
    """The test config, on the cluster, with R3 streams; the key the fake provider expects."""
    monkeypatch.setenv("LLMBUS_TEST_FAKE_KEY", "sk-test-fake-key-never-logged-0123456789")
    config = yaml.safe_load(config_file.read_text())
    config |= {"nats_url": cluster.url, "stream_replicas": 3}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, Settings.model_validate(config)


def answered(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    """`check`, reading False while the cluster fails over rather than raising."""

    async def tolerant() -> bool:
        try:
            return await check()
        except Exception as exc:
            if bus.is_transient(exc):
                return False
            raise

    return tolerant


async def move_leader(nc: NatsClient, node: str, stream: str, consumer: str = "") -> None:
    """Make `node` the leader of the stream (or of its consumer), by asking whoever leads it
    to step down in its favour."""
    js = nc.jetstream()
    kind, name = ("CONSUMER", f"{stream}.{consumer}") if consumer else ("STREAM", stream)

    async def leads() -> bool:
        info: Any = await (
            js.consumer_info(stream, consumer) if consumer else js.stream_info(stream)
        )
        if info.cluster.leader == node:
            return True
        preferred = json.dumps({"placement": {"preferred": node}}).encode()
        await nc.request(STEPDOWN.format(kind=kind, name=name), preferred, timeout=5)
        return False

    await wait_for(answered(leads), 60, f"{node} to lead {name}")


async def waiting_pulls(js: JetStreamContext, stream: str, consumer: str) -> int:
    return (await js.consumer_info(stream, consumer)).num_waiting or 0


def stops(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM stops it within a minute, failover or not (it has nothing left to finish)."""
    try:
        stop_process(process)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{log.stem} did not stop within 60 s of SIGTERM:\n{log.read_text()[-4000:]}"
        ) from None
    assert process.returncode == 0, f"{log.stem} exited with {process.returncode}"


def alive(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is not None:
        raise AssertionError(
            f"{log.stem} exited with {process.returncode}:\n{log.read_text()[-4000:]}"
        )


async def test_workers_and_usage_ride_out_the_stream_leader_being_killed(
    tmp_path: Path, cluster: NatsCluster, cluster_config: tuple[Path, Settings]
) -> None:
    config, settings = cluster_config
    cluster.start()
    nc = await bus.connect(settings, "test-failover")
    js = nc.jetstream()
    names = ("worker-1", "worker-2", "usage", "conversation")
    logs = {name: tmp_path / f"{name}.log" for name in names}
    services: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await bus.provision(js, settings)  # waits for the new cluster's meta leader
        for name in ("worker-1", "worker-2"):
            services[name] = spawn_service("completion", config, logs[name], LLMBUS_CONCURRENCY="4")
        for name in ("usage", "conversation"):
            services[name] = spawn_service(name, config, logs[name])

        async def all_pulling() -> bool:
            return (
                await waiting_pulls(js, subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER) >= 2
                and await waiting_pulls(js, subjects.EVENTS_STREAM, subjects.USAGE_CONSUMER) >= 1
                and await waiting_pulls(js, subjects.EVENTS_STREAM, subjects.CONVERSATION_CONSUMER)
                >= 1
            )

        await wait_for(answered(all_pulling), 90, "the workers, usage and conversations to pull")

        # one node leads everything the services read: killing it fails all of them over
        victim = (await js.stream_info(subjects.REQUESTS_STREAM)).cluster.leader
        assert victim in cluster.names
        await move_leader(nc, victim, subjects.EVENTS_STREAM)
        for stream, consumer in bus.consumer_configs(settings):
            assert consumer.durable_name is not None
            await move_leader(nc, victim, stream, consumer.durable_name)

        for i in range(TOTAL):
            await js.publish(subjects.COMPLETION_REQUESTED, request(i))

        async def received() -> int:
            counts = await subject_counts(js, subjects.COMPLETION_RECEIVED)
            return counts.get(subjects.COMPLETION_RECEIVED, 0)

        async def some_done() -> bool:
            return await received() >= 30

        await wait_for(answered(some_done), 90, "30 requests completed")
        done_before_kill = await received()
        cluster.kill(victim)
        assert done_before_kill < TOTAL, "all completed before the kill: nothing was tested"

        async def all_done() -> bool:
            for name, process in services.items():
                alive(process, logs[name])
            return await received() >= TOTAL

        await wait_for(answered(all_done), 180, f"{TOTAL} requests completed after the kill")

        counts = await subject_counts(js, "llmbus.>")
        assert counts.get(subjects.COMPLETION_RECEIVED) == TOTAL
        assert subjects.COMPLETION_FAILED not in counts
        assert counts.get(subjects.USAGE_RECORDED) == TOTAL
        async with watching_events(nc) as events:
            terminal = await events.wait_terminal(TOTAL, timeout=60)
        assert sorted(e["request_id"] for e in terminal) == sorted(
            f"failover-{i}" for i in range(TOTAL)
        )

        async def usage_recorded_all() -> bool:
            reply = await nc.request(subjects.USAGE_QUERY, b"{}", timeout=5)
            return json.loads(reply.data)["rows"][0]["requests"] == TOTAL

        await wait_for(answered(usage_recorded_all), 60, f"usage to record {TOTAL} requests")

        async def conversations_read_all() -> bool:
            info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.CONVERSATION_CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_for(answered(conversations_read_all), 60, "conversations to read every outcome")
        for name, process in services.items():
            await asyncio.to_thread(stops, process, logs[name])
    finally:
        for process in services.values():
            process.kill()
            process.wait()
        await nc.close()


async def test_provisioning_waits_for_the_cluster_to_form_and_says_so_when_it_does_not(
    tmp_path: Path, cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(state_dir=tmp_path / "state", nats_url=cluster.url, stream_replicas=3)
    cluster.start("n1")  # one node of three: no quorum, so JetStream cannot answer
    nc = await bus.connect(settings, "test-provision")
    js = nc.jetstream()
    try:
        with pytest.raises(NotReachableError, match=r"JetStream did not answer within 1 s"):
            await bus.provision(js, settings, patience_s=1)

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmbus.bus"):
            provisioning = asyncio.create_task(bus.provision(js, settings))
            await asyncio.to_thread(cluster.start, "n2", "n3")
            await asyncio.wait_for(provisioning, 90)
        info = await js.stream_info(subjects.REQUESTS_STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        # once per outage, not once per try
        messages = [r.getMessage() for r in caplog.records]
        assert sum("retrying until NATS answers" in m for m in messages) == 1, messages
        assert sum("NATS answers again" in m for m in messages) == 1, messages
    finally:
        await nc.close()
