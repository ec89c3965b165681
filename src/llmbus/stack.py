"""`llmbus up`: the whole stack on one machine — nats-server and each service as a process."""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import aiohttp

from llmbus.shared import bus, subjects
from llmbus.shared.auth.directory import publish_clients
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.auth.registry import load_clients
from llmbus.shared.errors import LlmbusError
from llmbus.shared.natsserver import EmbeddedNats, secured_nats
from llmbus.shared.sections import GATEWAY_URL_FILE
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.stack")
SERVICES = ("completion", "usage", "conversation", "gateway")


class Stack:
    def __init__(
        self,
        settings: Settings,
        workers: int = 1,
        quiet: bool = False,
        config: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.workers = workers
        self.quiet = quiet
        self.nats: EmbeddedNats | None = None
        self.auth: AuthFiles | None = None  # with the embedded server: its credentials
        self.url = ""
        self.processes: dict[subprocess.Popen[bytes], str] = {}
        self.gateway_url = ""  # the OpenAI-compatible gateway's, once it is ready

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir.resolve()

    async def start(self, ready_timeout_s: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.nats_url:
            self.url = self.settings.nats_url
        else:
            self.nats = secured_nats(self.state_dir)
            self.auth = AuthFiles.of(self.state_dir)
            self.url = await asyncio.to_thread(self.nats.start)
            bus.write_state_nats_url(self.state_dir, self.url)
        nc = await bus.connect(self.settings, "llmbus-up", self.url)
        try:
            await bus.provision(nc.jetstream(), self.settings)
            if self.auth is not None:
                await publish_clients(nc.jetstream(), load_clients(self.auth.registry))
        finally:
            await nc.close()
        # a previous run's: the gateway writes its own once it listens
        (self.state_dir / GATEWAY_URL_FILE).unlink(missing_ok=True)
        for service in SERVICES:
            for _ in range(self.workers if service == "completion" else 1):
                self.processes[self.spawn(service)] = service
        await self.wait_ready(ready_timeout_s)

    def spawn(self, service: str) -> subprocess.Popen[bytes]:
        env = os.environ | {"NATS_URL": self.url, "LLMBUS_STATE_DIR": str(self.state_dir)}
        if self.config is not None:
            env["LLMBUS_CONFIG"] = str(self.config)
        if self.auth is not None:
            env["NATS_CREDS"] = str(self.auth.service(service))
        metrics_at = {"usage": 0, "conversation": 1, "completion": 2}  # offsets from the base
        if self.settings.metrics_base_port is not None and service in metrics_at:
            # each completion worker a port of its own: the workers spawned before it count
            nth = self.completion_workers
            port = self.settings.metrics_base_port + metrics_at[service]
            port += nth if service == "completion" else 0
            env[f"LLMBUS_{service.upper()}_METRICS_PORT"] = str(port)
            log.info("%s metrics on port %d", service, port)
        log_path = self.state_dir / f"{service}.log"
        output = open(log_path, "ab") if self.quiet else None
        return subprocess.Popen(
            [sys.executable, "-m", "llmbus", "serve", service],
            env=env,
            stdout=output,
            stderr=output,
            # our own process group: Ctrl-C reaches the supervisor, which stops children in order
            start_new_session=True,
        )

    @property
    def completion_workers(self) -> int:
        return sum(1 for service in self.processes.values() if service == "completion")

    async def wait_ready(self, timeout_s: float) -> None:
        nc = await bus.connect(self.settings, "llmbus-up", self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.check_alive()
                info = await nc.jetstream().consumer_info(
                    subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER
                )
                answering = [
                    await bus.answers(nc, subject)
                    for subject in (subjects.USAGE_QUERY, subjects.PROMPT_LIST)
                ]
                # an idle worker holds one pull open: as many pulls as workers, every one pulls
                pulling = (info.num_waiting or 0) >= max(self.completion_workers, 1)
                if all(answering) and pulling and await self.gateway_ready():
                    return
                await asyncio.sleep(0.2)  # polling readiness of processes we just started
        finally:
            await nc.close()
        raise LlmbusError(f"services not ready within {timeout_s}s; see {self.state_dir}/*.log")

    async def gateway_ready(self) -> bool:
        """Whether the gateway answers its /readyz, at the URL it wrote (its port may be one the
        system chose)."""
        url_file = self.state_dir / GATEWAY_URL_FILE
        if not url_file.is_file():
            return False
        url = url_file.read_text().strip()
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(f"{url}/readyz") as response:
                    ready = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
        self.gateway_url = url if ready else ""
        return ready

    def check_alive(self) -> None:
        for process, service in self.processes.items():
            if process.poll() is not None:
                raise LlmbusError(
                    f"the {service} service exited with {process.returncode}; "
                    f"see its output or {self.state_dir}/{service}.log"
                )

    def stop(self, timeout_s: float = 30.0) -> None:
        # the gateway first, so that the requests it holds end while the workers still run; then
        # completion workers: they give their budget grants back to the usage service
        gateways = [p for p, service in self.processes.items() if service == "gateway"]
        workers = [p for p, service in self.processes.items() if service == "completion"]
        rest = [p for p in self.processes if p not in gateways and p not in workers]
        for group in (gateways, workers, rest):
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in group:
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
        if self.nats is not None:
            self.nats.stop()
            (self.state_dir / bus.NATS_URL_FILE).unlink(missing_ok=True)

    async def __aenter__(self) -> "Stack":
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


async def run_until_stopped(stack: Stack) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack:
        print(f"llmbus is up: NATS at {stack.url}, state in {stack.state_dir}", flush=True)
        print(f"OpenAI-compatible gateway at {stack.gateway_url}/v1", flush=True)
        print(f"web console at {stack.gateway_url}/ui: log in with an admin key "
              "(`llmbus keys create --user you --admin`)", flush=True)  # fmt: skip
        print("Ctrl-C drains in-flight work and stops.", flush=True)
        while not stop.is_set():
            stack.check_alive()
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
        print("stopping: draining in-flight work…", flush=True)
