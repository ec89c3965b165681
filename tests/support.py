"""Test support: run services, watch events, and wait on conditions instead of sleeping."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from llmbus.client import Client
from llmbus.shared import bus, subjects
from llmbus.shared.auth.clients import apply_clients, issue_client
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.errors import LlmbusError
from llmbus.shared.sections import GATEWAY_URL_FILE, GatewaySettings
from llmbus.shared.settings import Settings

TERMINAL = (subjects.COMPLETION_RECEIVED, subjects.COMPLETION_FAILED)


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 30.0,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class EventLog:
    """Every event published on the events stream, from the start, decoded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on(self, subject: str) -> list[dict[str, Any]]:
        return [e for s, e in self.events if s == subject]

    def terminal(self) -> list[dict[str, Any]]:
        return [e for s, e in self.events if s in TERMINAL]

    async def wait_terminal(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        await wait_for(lambda: len(self.terminal()) >= count, timeout, f"{count} terminal events")
        return self.terminal()


@contextlib.asynccontextmanager
async def watching_events(nc: NatsClient) -> AsyncIterator[EventLog]:
    log = EventLog()

    async def collect(msg: Any) -> None:
        log.events.append((msg.subject, json.loads(msg.data)))

    sub = await nc.jetstream().subscribe(
        "llmbus.>",
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        cb=collect,
    )
    try:
        yield log
    finally:
        await sub.unsubscribe()


@contextlib.asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[NatsClient]:
    assert settings.nats_url
    nc = await bus.connect(settings, "test")
    try:
        yield nc
    finally:
        await nc.drain()


@contextlib.asynccontextmanager
async def running(
    serve: Callable[[Settings, asyncio.Event], Awaitable[None]], settings: Settings
) -> AsyncIterator[None]:
    """Run a service in this event loop; on exit, stop it the way Ctrl-C does and wait."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def completion_service_ready(nc: NatsClient) -> bool:
    try:
        info = await nc.jetstream().consumer_info(
            subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER
        )
    except NotFoundError:
        return False  # not provisioned yet
    return (info.num_waiting or 0) > 0


def spawn_service(
    service: str,
    config_file: Path,
    log: Path | None = None,
    *,
    stdout: int = subprocess.DEVNULL,
    **env: str,
) -> subprocess.Popen[bytes]:
    """`llmbus serve SERVICE`; its stderr goes to `log` if given (a pipe nobody reads would
    stall a service that logs a lot), else to a pipe."""
    with log.open("ab") if log else contextlib.nullcontext() as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "llmbus", "serve", service],
            env=os.environ
            | {"LLMBUS_CONFIG": str(config_file)}
            | service_creds(service, config_file)
            | env,
            stdout=stdout,
            stderr=stderr or subprocess.PIPE,
        )


def service_creds(service: str, config_file: Path) -> dict[str, str]:
    """The service's own credentials, as `llmbus up` gives it, where the test's server has them."""
    config = yaml.safe_load(config_file.read_text())
    seed = AuthFiles.of(Path(config["state_dir"])).service(service)
    return {"NATS_CREDS": str(seed)} if seed.is_file() else {}


def llmbus_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the llmbus CLI as a user would, with the test's LLMBUS_CONFIG."""
    return subprocess.run(
        [sys.executable, "-m", "llmbus", *args], capture_output=True, text=True, timeout=120
    )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        process.wait(60)


async def projected_requests(client: Client) -> int:
    """How many calls the usage projection reflects; -1 while the usage service isn't answering."""
    try:
        return int((await client.usage.query()).rows[0]["requests"])
    except LlmbusError:
        return -1


async def subject_counts(js: JetStreamContext, subject_filter: str) -> dict[str, int]:
    """How many events the events stream holds on each subject that matches the filter."""
    info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject_filter)
    return dict(info.state.subjects or {})


async def requests_in_flight(nc: NatsClient) -> int:
    """Requests delivered to a completion worker and not yet acked."""
    info = await nc.jetstream().consumer_info(
        subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER
    )
    return info.num_ack_pending


@contextlib.asynccontextmanager
async def pipeline(
    settings: Settings, with_usage: bool = True
) -> AsyncIterator[tuple[NatsClient, EventLog, Client]]:
    """The completion (and usage) service in this event loop, a client, and the event log."""
    from llmbus.services.completion.service import serve as serve_completion
    from llmbus.services.usage.service import serve as serve_usage

    usage = running(serve_usage, settings) if with_usage else contextlib.nullcontext()
    async with (
        connected(settings) as nc,
        watching_events(nc) as events,
        running(serve_completion, settings),
        usage,
        Client(settings=settings) as client,
    ):
        await wait_for(lambda: completion_service_ready(nc), 60, "the completion worker")
        if with_usage:  # the worker's events come before the usage service answers queries
            await wait_for(lambda: bus.answers(nc, subjects.BUDGET_STATUS), 60, "the usage service")
        yield nc, events, client


# Budget tests: one small request to the simulated model, and the budgets it meets

MODEL = "llmbus-sim/small"
MESSAGES = [{"role": "user", "content": "How much will this cost?"}]
MAX_TOKENS = 30


def worst_case(settings: Settings) -> Decimal:
    return ModelCatalog(settings).worst_case_cost(MODEL, MESSAGES, MAX_TOKENS)


def with_budgets(config_file: Path, *budgets: dict[str, Any], **completion: Any) -> Settings:
    """Write these budgets (and completion settings) into the config file that in-process
    services and spawned ones both read; the settings it now gives."""
    config = yaml.safe_load(config_file.read_text())
    config["budgets"] = list(budgets)
    config["completion"] |= completion
    config_file.write_text(yaml.safe_dump(config))
    return Settings.model_validate(config)


async def budget_status(nc: NatsClient) -> dict[str, dict[str, Any]]:
    reply = await nc.request(subjects.BUDGET_STATUS, b"{}", timeout=5)
    return {row["name"]: row for row in json.loads(reply.data)}


async def new_client(
    settings: Settings,
    name: str,
    user_id: str,
    team_id: str | None = None,
    project_id: str | None = None,
    admin: bool = False,
) -> Path:
    """Credentials for a client, issued as `llmbus clients create` does, on the test's server."""
    files = AuthFiles.of(settings.state_dir)
    _, path = issue_client(files, name, user_id, team_id, project_id, admin)
    await apply_clients(settings)
    return path


@contextlib.asynccontextmanager
async def as_client(settings: Settings, creds: Path) -> AsyncIterator[NatsClient]:
    """A raw NATS connection with a client's credentials, as an attacker would hold."""
    nc = await bus.connect(settings, "test-client", creds=creds)
    try:
        yield nc
    finally:
        await nc.close()


def chromium() -> str | None:
    """Debian's chromium, which the browser tests drive through Playwright."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (uv sync --frozen installs the dev group)"
    if chromium() is None:
        return "no chromium at /usr/bin/chromium or on PATH (make browser, or apt-get install chromium)"
    return None


def gateway_settings(settings: Settings, **gateway: Any) -> Settings:
    """On a free port, with the gateway service's own credentials where the server has them."""
    seed = AuthFiles.of(settings.state_dir).service("gateway")
    return settings.model_copy(update={
        "gateway": GatewaySettings.model_validate(
            settings.gateway.model_dump() | {"port": 0, **gateway}
        ),
        "nats_creds": seed if seed.is_file() else settings.nats_creds,
    })  # fmt: skip


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, **options: Any) -> AsyncIterator[str]:
    """`llmbus serve gateway` in this event loop; its URL, once its /readyz says ready."""
    import aiohttp

    from llmbus.services.gateway.service import serve

    async def ready(url: str) -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
            return response.status == 200

    url_file = settings.state_dir / GATEWAY_URL_FILE
    url_file.unlink(missing_ok=True)  # another gateway's, on the same state folder
    async with running(serve, gateway_settings(settings, **options)):
        await wait_for(url_file.is_file, 30, "the gateway to listen")
        url = url_file.read_text().strip()
        await wait_for(lambda: ready(url), 60, "the gateway to be ready")
        yield url
