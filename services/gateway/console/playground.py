"""A prompt's playground: its variables, a model or a role, what the call would cost at most
before it is made (client.estimate, no model called), then the call streamed as the gateway
streams any other, and its true cost from the stream's final usage.

The run is booked to the admin key's user, team and project, as a call through the gateway
with that key would be.
"""

import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from llmbus.client import new_request_id
from llmbus.services.gateway.console.forms import FormError, reason, variables
from llmbus.services.gateway.console.parts import client, gateway, me
from llmbus.services.gateway.console.streams import CostedChunks
from llmbus.services.gateway.domain.openai import model_list
from llmbus.services.gateway.handlers import REQUEST_ID_HEADER
from llmbus.services.gateway.streaming import relay_stream
from llmbus.shared.contracts import CompletionRequested
from llmbus.shared.contracts.prompt import PromptView
from llmbus.shared.prompts.template import Variable, declare


def declared(view: PromptView) -> list[Variable]:
    """Every variable the template uses: declared ones as declared, the rest required text."""
    return declare(view.template, view.variables)


def targets(request: web.Request) -> tuple[list[str], list[str]]:
    """The models and the roles a playground may call."""
    settings = gateway(request).settings
    listed = [entry["id"] for entry in model_list(settings, 0)["data"]]
    return [name for name in listed if name not in settings.roles], list(settings.roles)


def playground_context(
    request: web.Request,
    view: PromptView,
    values: dict[str, str] | None = None,
    target: str | None = None,
    estimate: Any = None,
    preview_error: str | None = None,
) -> dict[str, Any]:
    models, roles = targets(request)
    return {"variables": declared(view), "values": values or {}, "models": models,
            "roles": roles, "target": target or settings_default(request, models),
            "estimate": estimate, "preview_error": preview_error}  # fmt: skip


def settings_default(request: web.Request, models: list[str]) -> str:
    return gateway(request).settings.default_role or (models[0] if models else "")


def target_fields(request: web.Request, target: str) -> dict[str, Any]:
    if not target:
        raise FormError("choose a model or a role")
    return {"role": target} if target in gateway(request).settings.roles else {"model": target}


async def asked(request: web.Request) -> tuple[PromptView, dict[str, Any], dict[str, str], str]:
    """The prompt at the playground's version, the typed variables, the fields as sent, and
    the model or role chosen."""
    form = await request.post()
    fields = {name: str(value) for name, value in form.items()}
    at = fields.get("version", "")
    view = await client(request).prompts.get(
        request.match_info["key"], version=int(at) if at.isdigit() else None
    )
    return view, variables(declared(view), fields), fields, fields.get("target", "")


async def run(request: web.Request) -> web.StreamResponse:
    """The call, streamed as OpenAI chunks; the final usage carries the true cost."""
    view, values, _, target = await asked(request)
    owner, request_id = me(request), new_request_id()
    try:
        completion = CompletionRequested.model_validate({
            "request_id": request_id, "stream": True,
            "prompt": {"key": view.key, "version": view.version, "variables": values},
            "user_id": owner.user_id, "team_id": owner.team_id, "project_id": owner.project_id,
            "metadata": {"key_id": owner.key_id, "console": "playground"},
            **target_fields(request, target),
        })  # fmt: skip
    except ValidationError as exc:
        raise FormError(reason(exc)) from None
    door = gateway(request)
    chunks = CostedChunks(request_id, target, int(time.time()), include_usage=True)
    return await relay_stream(request, door.completions, completion, chunks,
                              {REQUEST_ID_HEADER: request_id}, door.rate_limit_pause_s)  # fmt: skip
