"""The gateway process: one NATS connection (shared/bus), the SDK's Client on it, the key check
following revocations, and the HTTP server; no store of its own, so any number can run."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

from llmbus.client import Client
from llmbus.client._transport import call
from llmbus.services.gateway.application.completions import SDK_MARGIN_S, Completions
from llmbus.services.gateway.application.keys import KeyCheck, Verify
from llmbus.services.gateway.console.app import console_app
from llmbus.services.gateway.handlers import Gateway, gateway_app
from llmbus.shared import bus, subjects
from llmbus.shared.contracts.keys import KeyInfo, KeyRevoked, KeyVerified, KeyVerify
from llmbus.shared.errors import LlmbusError, ReplyErrorType, RequestError, UnauthorizedError
from llmbus.shared.sections import GATEWAY_URL_FILE
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.gateway")
# how long a stopping gateway lets the requests in hand finish before it cancels them
DRAIN_S = 20.0
PROBE_TIMEOUT_S = 1.0
# asked so that the service answers at once, with an error, and does no work
PROBES = {
    "completion": (subjects.COMPLETION_STATUS, b"{}"),
    "usage": (subjects.USAGE_QUERY, b'{"metrics":[]}'),
}


def verifier(nc: NatsClient) -> Verify:
    """llmbus.keys.verify through the SDK's one request/reply call; `unauthorized` becomes the
    UnauthorizedError the key check caches."""

    async def verify(digest: str) -> KeyInfo:
        try:
            verified = await call(nc, subjects.KEYS_VERIFY, KeyVerify(key_hash=digest),
                                  KeyVerified, service="usage")  # fmt: skip
        except RequestError as exc:
            if exc.error_type == ReplyErrorType.unauthorized:
                raise UnauthorizedError(exc.message) from None
            raise
        return verified.info

    return verify


def readiness(nc: NatsClient) -> Callable[[], Awaitable[dict[str, bool]]]:
    async def ready() -> dict[str, bool]:
        if not nc.is_connected:
            return {"nats": False} | dict.fromkeys(PROBES, False)
        answered = await asyncio.gather(
            *(bus.answers(nc, *probe, PROBE_TIMEOUT_S) for probe in PROBES.values())
        )
        return {"nats": True} | dict(zip(PROBES, answered, strict=True))

    return ready


def follow_revocations(keys: KeyCheck) -> Callable[[Msg], Awaitable[None]]:
    async def revoked(msg: Msg) -> None:
        try:
            event = KeyRevoked.model_validate_json(msg.data)
        except ValidationError:
            log.warning("ignoring a malformed message on %s", subjects.KEYS_REVOKED)
            return
        keys.forget(event.key_hash)
        log.info("API key %s revoked: refused from now on", event.key_id)

    return revoked


def listening_url(runner: web.AppRunner, host: str) -> str:
    port = runner.addresses[0][1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"


async def serve(
    settings: Settings, stop: asyncio.Event, mounts: Mapping[str, web.Application] | None = None
) -> None:
    """Serve until `stop`; `mounts`: applications served under their own prefix (the console
    under /ui), which reach the gateway as `request.config_dict[GATEWAY]`."""
    nc = await bus.connect(settings, "llmbus-gateway")
    try:
        async with contextlib.AsyncExitStack() as stack:
            gateway = await assemble(settings, nc, stack)
            mounts = {"/ui": console_app()} if mounts is None else mounts  # the web console
            url = await start_http(gateway_app(gateway, mounts), settings, stack)
            log.info("gateway listening on %s (OpenAI base_url %s/v1)", url, url)
            await stop.wait()
            log.info("gateway stopping: finishing the requests in hand")
    finally:
        if nc.is_connected:
            await nc.drain()  # what is queued goes out: the cancels of abandoned requests
        else:
            await nc.close()


async def assemble(settings: Settings, nc: NatsClient, stack: contextlib.AsyncExitStack) -> Gateway:
    """The gateway's parts on the one connection; the cancels it sends are awaited on exit."""
    timeout_s = settings.gateway.request_timeout_s
    client = Client.on_connection(nc, settings, timeout_s=timeout_s + SDK_MARGIN_S)
    completions = Completions(client, timeout_s)
    stack.push_async_callback(completions.drain)
    keys = KeyCheck(verifier(nc), settings.gateway.key_cache_s)
    await nc.subscribe(subjects.KEYS_REVOKED, cb=follow_revocations(keys))
    return Gateway(settings, completions, keys, readiness(nc))


async def start_http(
    app: web.Application, settings: Settings, stack: contextlib.AsyncExitStack
) -> str:
    """Listen, and write where to <state_dir>/gateway.url; on exit the server stops taking
    connections and lets the requests in hand end (a caller gone cancels its request)."""
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=DRAIN_S
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await listen(runner, settings.gateway.host, settings.gateway.port)
    url = listening_url(runner, settings.gateway.host)
    url_file = settings.state_dir / GATEWAY_URL_FILE
    write_url(url_file, url)
    stack.callback(url_file.unlink, missing_ok=True)
    return url


async def listen(runner: web.AppRunner, host: str, port: int) -> None:
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise LlmbusError(
            f"the gateway cannot listen on {host}:{port} ({exc.strerror}); set gateway.port "
            "(0: any free port) or LLMBUS_GATEWAY_PORT"
        ) from None


def write_url(path: Path, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(url + "\n")
