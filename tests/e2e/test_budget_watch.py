"""`llmbus budgets watch` follows the stack across a restart on a new port: the story a user hit
was a watch that retried the old address for ever."""

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from llmbus.shared import bus, subjects
from llmbus.shared.contracts.budget import BudgetExceeded
from llmbus.shared.natsserver import EmbeddedNats, secured_nats
from llmbus.shared.settings import Settings, load_settings
from support import wait_for


class Lines:
    """A process's stdout, read on a thread so the test can wait on it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True).start()

    def naming(self, request_id: str) -> list[str]:
        return [line for line in self.lines if request_id in line]


@pytest.fixture
def state_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with no NATS_URL: clients find the server through the state folder's nats.url."""
    config = tmp_path / "llmbus.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    monkeypatch.setenv("LLMBUS_CONFIG", str(config))
    monkeypatch.delenv("NATS_URL", raising=False)
    return load_settings()


@pytest.fixture
def watch(state_settings: Settings) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "llmbus", "budgets", "watch"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    yield process
    process.kill()
    process.wait(30)


async def start_nats(data_dir: Path, settings: Settings, not_on: str = "") -> EmbeddedNats:
    """nats-server on a free port other than `not_on`, its address written to nats.url as
    `llmbus up` does, its streams provisioned."""
    while True:
        server = secured_nats(settings.state_dir, data_dir)
        url = await asyncio.to_thread(server.start)
        if url != not_on:
            break
        server.stop()  # the same port came back free: the story needs a new one
    bus.write_state_nats_url(settings.state_dir, url)
    nc = await bus.connect(settings, "test-provision", url)
    await bus.provision(nc.jetstream(), settings)
    await nc.close()
    return server


async def publish_exceeded(settings: Settings, url: str, request_id: str) -> None:
    event = BudgetExceeded(
        budget="team-cap", scope={"team": "red"}, window_start=datetime.now(UTC), spent_usd=0.01,
        reserved_usd=0.0, limit_usd=0.01, requested_usd=0.002, mode="hard", request_id=request_id,
    )  # fmt: skip
    nc = await bus.connect(settings, "test", url)
    await nc.jetstream().publish(subjects.BUDGET_EXCEEDED, event.model_dump_json().encode())
    await nc.close()


async def test_the_watch_follows_the_stack_to_its_new_port(
    tmp_path: Path, state_settings: Settings, watch: subprocess.Popen[str]
) -> None:
    first = await start_nats(tmp_path / "nats", state_settings)
    try:
        output = Lines(watch)

        # the watch only sees events from when it subscribed: send until one arrives
        async def seen_before() -> bool:
            await publish_exceeded(state_settings, first.url, "before-restart")
            await asyncio.sleep(0.2)
            return bool(output.naming("before-restart"))

        await wait_for(seen_before, 30, "the watch to print an event")
    finally:
        first.stop()

    second = await start_nats(tmp_path / "nats", state_settings, not_on=first.url)
    try:
        await publish_exceeded(state_settings, second.url, "after-restart")
        await wait_for(lambda: bool(output.naming("after-restart")), 30, "the watch to resume")
        assert watch.poll() is None
        assert len(output.naming("after-restart")) == 1
    finally:
        second.stop()
