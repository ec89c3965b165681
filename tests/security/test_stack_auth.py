"""`llmbus up` as a user runs it: authentication on, each service with its own credentials
(least privilege), a client issued with `llmbus clients create` served end to end, and no
permission the services need refused."""

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from llmbus.client import Client
from llmbus.shared.settings import Settings, load_settings
from llmbus.stack import Stack
from support import llmbus_cli

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("NATS_URL")), reason="runs the embedded server of llmbus up"
)


@pytest.fixture
def up_settings(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Path]:
    config = yaml.safe_load(config_file.read_text())
    config.pop("nats_url")
    config["state_dir"] = str(tmp_path / "up")
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("LLMBUS_CONFIG", str(path))
    monkeypatch.setenv("LLMBUS_TEST_FAKE_KEY", "sk-test-fake-key-never-logged-0123456789")
    monkeypatch.delenv("NATS_URL", raising=False)
    return load_settings(), path


async def test_llmbus_up_serves_a_client_through_services_holding_their_own_credentials(
    up_settings: tuple[Settings, Path],
) -> None:
    settings, config = up_settings
    async with Stack(settings, quiet=True, config=config) as stack:
        created = await asyncio.to_thread(
            llmbus_cli, "clients", "create", "app", "--user", "alice", "--team", "red"
        )
        assert created.returncode == 0, created.stderr
        creds = Path(created.stdout.strip().splitlines()[-1])
        async with Client(creds=creds, settings=settings) as client:
            done = await client.complete("hello", model="fake-gpt")
            turn = await client.chat("alice", None, "hi there", model="fake-gpt")
        assert (done.user_id, done.team_id) == ("alice", "red")
        assert turn.status == "completed", turn.error
        log = (stack.state_dir / "nats" / "nats-server.log").read_text()
    assert "Violation" not in log
