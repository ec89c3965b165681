"""The gateway's HTTP edge (aiohttp): OpenAI's /v1 routes, the health probes and /metrics.

Every /v1 error leaves in OpenAI's shape (`domain/errors.py`), and every request is counted.
Other applications (the web console) mount under their own prefix with `gateway_app(...,
mounts=)`, and reach the gateway's parts as `request.config_dict[GATEWAY]`.
"""

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import nats.errors
from aiohttp import hdrs, web

from llmbus.client import CompletionError, new_request_id
from llmbus.services.gateway.application.completions import Completions
from llmbus.services.gateway.application.keys import KeyCheck
from llmbus.services.gateway.domain import errors
from llmbus.services.gateway.domain.errors import HttpFailure
from llmbus.services.gateway.domain.openai import (
    ChunkObjects,
    Extras,
    completion_object,
    completion_request,
    model_list,
    read_body,
)
from llmbus.services.gateway.metrics import (
    GATEWAY_IN_FLIGHT,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    count_error,
)
from llmbus.services.gateway.streaming import relay_stream
from llmbus.shared.errors import LlmbusError, RequestError
from llmbus.shared.metrics import exposition
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.gateway")
REQUEST_ID_HEADER = "X-Llmbus-Request-Id"
COST_HEADER = "X-Llmbus-Cost-Usd"
CONVERSATION_HEADER = "X-Llmbus-Conversation-Id"
WORKFLOW_HEADER = "X-Llmbus-Workflow-Id"
TAGS_HEADER = "X-Llmbus-Tags"
REQUEST_ID = web.RequestKey("request_id", str)


@dataclass
class Gateway:
    """What the handlers need: the settings, the completions, the key check, readiness."""

    settings: Settings
    completions: Completions
    keys: KeyCheck
    ready: Callable[[], Awaitable[dict[str, bool]]]
    started: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.roles = frozenset(self.settings.roles)
        self.models = dumps(model_list(self.settings, self.started))  # it never changes
        # a model passed over after a 429 is called again once its cooldown is over
        self.rate_limit_pause_s = max(1, math.ceil(self.settings.completion.cooldown_s))


GATEWAY = web.AppKey("gateway", Gateway)


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def extras(headers: Mapping[str, str]) -> Extras:
    tags = (tag.strip() for tag in headers.get(TAGS_HEADER, "").split(","))
    return Extras(
        conversation_id=headers.get(CONVERSATION_HEADER, "").strip() or None,
        workflow_id=headers.get(WORKFLOW_HEADER, "").strip() or None,
        tags=tuple(tag for tag in tags if tag),
    )


def cost_text(cost_usd: float) -> str:
    return format(Decimal(str(cost_usd)).normalize(), "f")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    key = await gateway.keys.identify(request.headers.get(hdrs.AUTHORIZATION))
    limit = gateway.settings.gateway.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = read_body(await request.read())
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    completion = completion_request(body, key, extras(request.headers), gateway.roles, request_id)
    headers = {REQUEST_ID_HEADER: request_id}
    if body.stream:
        objects = ChunkObjects(request_id, body.model, int(time.time()), body.include_usage)
        return await relay_stream(request, gateway.completions, completion, objects, headers,
                                  gateway.rate_limit_pause_s)  # fmt: skip
    received = await gateway.completions.complete(completion)
    headers[COST_HEADER] = cost_text(received.cost_usd)
    payload = dumps(completion_object(received, int(time.time())))
    return web.Response(body=payload, content_type="application/json", headers=headers)


async def models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    await gateway.keys.identify(request.headers.get(hdrs.AUTHORIZATION))
    return web.Response(body=gateway.models, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[GATEWAY].ready()
    ready = all(checks.values())
    return web.json_response({"ready": ready, **checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = await asyncio.to_thread(exposition, request.headers.get(hdrs.ACCEPT))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


def route_of(request: web.Request) -> str:
    """A route's pattern, never the path asked for: an unmatched path is one label, not many."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def measured(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    GATEWAY_IN_FLIGHT.inc()
    started, status = time.perf_counter(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the caller closed the connection first
        raise
    finally:
        GATEWAY_IN_FLIGHT.dec()
        route = route_of(request)
        HTTP_REQUESTS(route, str(status)).inc()
        HTTP_LATENCY(route).observe(time.perf_counter() - started)


@web.middleware
async def openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure of a /v1 request as OpenAI's error body, with its status; other paths (the
    probes, a mounted console) answer their errors their own way."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405, 413):
            raise
        limit = request.app[GATEWAY].settings.gateway.max_body_bytes
        failure = errors.body_too_large(limit) if exc.status == 413 else errors.no_route(exc.status)
    except Exception as exc:
        failure = failure_of(request, exc)
    count_error(failure.code)
    headers = failure.headers()
    if REQUEST_ID in request:
        headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    return web.Response(body=dumps(failure.body()), status=failure.status,
                        content_type="application/json", headers=headers)  # fmt: skip


def failure_of(request: web.Request, exc: Exception) -> HttpFailure:
    gateway, request_id = request.app[GATEWAY], request.get(REQUEST_ID)
    if isinstance(exc, CompletionError):
        return errors.failure(exc.failed, gateway.rate_limit_pause_s)
    if isinstance(exc, nats.errors.Error) or type(exc) is LlmbusError:
        # NATS is failing over, or a service did not answer (the SDK says which)
        log.warning("request %s: %s", request_id or "-", exc)
        return errors.unavailable(str(exc) or "NATS did not answer")
    if isinstance(exc, TimeoutError) and request_id:  # the gateway's deadline: it cancelled
        return errors.timed_out(request_id, gateway.completions.timeout_s)
    if isinstance(exc, LlmbusError | RequestError):
        return errors.error(exc)
    log.exception("request %s failed inside the gateway", request_id or "-")
    return errors.internal(request_id)


def gateway_app(
    gateway: Gateway, mounts: Mapping[str, web.Application] | None = None
) -> web.Application:
    """The gateway's routes, and any application mounted under its own prefix (`/ui`)."""
    app = web.Application(
        middlewares=[measured, openai_errors],
        client_max_size=gateway.settings.gateway.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    for prefix, mounted in (mounts or {}).items():
        app.add_subapp(prefix, mounted)
    return app
