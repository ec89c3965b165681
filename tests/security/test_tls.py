"""NATS over TLS, as docker-compose runs it: `llmbus clients init --tls-host` makes a CA and a
server certificate, nats-server serves TLS with the same accounts, and llmbus connects with
NATS_TLS_CA and its credentials."""

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from llmbus.shared import bus
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.natsserver import secured_nats
from llmbus.shared.settings import Settings

pytestmark = pytest.mark.refusals


def init(state_dir: Path) -> None:
    env = os.environ | {"LLMBUS_STATE_DIR": str(state_dir)}
    subprocess.run(
        [sys.executable, "-m", "llmbus", "clients", "init", "--tls-host", "127.0.0.1"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip


async def test_llmbus_connects_over_tls_with_its_ca_and_a_plain_connection_is_refused(
    tmp_path: Path,
) -> None:
    state = tmp_path / "tls-state"
    await asyncio.to_thread(init, state)
    ca = AuthFiles.of(state).tls_dir / "ca.pem"
    with secured_nats(state) as server:
        url = server.url.replace("nats://", "tls://")
        settings = Settings(state_dir=state, nats_url=url, nats_tls_ca=ca)
        nc = await bus.connect(settings, "over-tls")
        assert nc.is_connected
        await nc.close()
        with pytest.raises((ssl.SSLError, nats.errors.Error, OSError)):
            await nats.connect(
                url, allow_reconnect=False, connect_timeout=2,
                nkeys_seed=str(AuthFiles.of(state).operator),
            )  # fmt: skip
