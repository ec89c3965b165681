"""/ui/prompts: managed prompts through client.prompts. The list; a prompt at a version with its
versions, labels and history; an edit (a new version), labels moved, a roll back, activation.
Each change is a POST answered by a redirect to the prompt, so a reload never repeats it; one
the service refuses is shown on the prompt's page with the reason. Changes are made in the
name of the admin key's user (`author`)."""

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from llmbus.services.gateway.console.forms import FormError, reason, template_of, version
from llmbus.services.gateway.console.parts import client, me
from llmbus.services.gateway.console.playground import (
    asked,
    playground_context,
    run,
    target_fields,
)
from llmbus.services.gateway.console.render import PREFIX, page
from llmbus.shared.contracts.prompt import PromptView
from llmbus.shared.errors import RequestError
from llmbus.shared.prompts.template import TemplateError

LABELS = ("production", "staging", "development")
Form = MultiDictProxy[Any]


async def prompt_list(request: web.Request) -> web.StreamResponse:
    prompts = await client(request).prompts.list()
    return page(request, "prompts.html", prompts=prompts, error=None, form={})


async def prompt_create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    key = str(form.get("key", "")).strip()
    try:
        await client(request).prompts.create(
            key, str(form.get("name", "")).strip() or key,
            template_of(str(form.get("template", "")), chat=False),
            description=str(form.get("description", "")), author=me(request).user_id,
        )  # fmt: skip
    except (RequestError, FormError) as exc:
        prompts = await client(request).prompts.list()
        return page(request, "prompts.html", 400, prompts=prompts, error=reason(exc), form=form)
    raise web.HTTPSeeOther(f"{PREFIX}/prompts/{key}")


async def prompt_page(
    request: web.Request,
    status: int = 200,
    error: str | None = None,
    at: int | None = None,
    **playground: Any,
) -> web.StreamResponse:
    """The prompt at version `at`, else the link's, else the one a request would use."""
    key = request.match_info["key"]
    asked = request.query.get("version", "")
    prompts = client(request).prompts
    view = await prompts.get(key, version=at or (int(asked) if asked.isdigit() else None))
    history = await prompts.history(key) if view.source == "managed" else []
    context = {"view": view, "history": history, "error": error, "labels": LABELS,
               "versions": range(view.latest_version, 0, -1)}  # fmt: skip
    context |= playground_context(request, view, **playground)
    return page(request, "prompt.html", status, **context)


def change(
    act: Callable[[web.Request, str, Form], Awaitable[PromptView]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A POST that changes the prompt: done, then back to it at the version it concerns."""

    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        form = await request.post()
        try:
            view = await act(request, key, form)
        except (RequestError, FormError, TemplateError) as exc:
            return await prompt_page(request, 400, reason(exc))
        raise web.HTTPSeeOther(f"{PREFIX}/prompts/{key}?version={view.version}")

    return handler


async def edit(request: web.Request, key: str, form: Form) -> PromptView:
    text, chat = str(form.get("template", "")), form.get("chat") == "1"
    return await client(request).prompts.update(
        key, template=template_of(text, chat), note=str(form.get("note", "")).strip(),
        author=me(request).user_id,
    )  # fmt: skip


async def move_label(request: web.Request, key: str, form: Form) -> PromptView:
    label = str(form.get("label", ""))
    if label not in LABELS:
        raise FormError(f"label must be one of {', '.join(LABELS)}")
    move = (
        client(request).prompts.rollback if form.get("rollback") else client(request).prompts.label
    )
    return await move(key, label, version(form), author=me(request).user_id)


async def activate(request: web.Request, key: str, form: Form) -> PromptView:
    prompts, author = client(request).prompts, me(request).user_id
    if form.get("active") == "1":
        return await prompts.activate(key, author=author)
    return await prompts.deactivate(key, author=author)


async def preview(request: web.Request) -> web.StreamResponse:
    """The playground's cost preview: what the call would cost at most, and which budgets it
    would count against; no model is called."""
    view, values, fields, target = await asked(request)
    ref = {"key": view.key, "version": view.version, "variables": values}
    owner = me(request)
    try:
        estimate = await client(request).estimate(
            prompt_ref=ref, user_id=owner.user_id, team_id=owner.team_id,
            project_id=owner.project_id, **target_fields(request, target),
        )  # fmt: skip
    except (RequestError, FormError, ValidationError) as exc:
        return await prompt_page(request, 400, at=view.version, values=fields, target=target,
                                 preview_error=reason(exc))  # fmt: skip
    return await prompt_page(request, at=view.version, values=fields, target=target,
                             estimate=estimate)  # fmt: skip


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/prompts", prompt_list, name="prompts")
    router.add_post("/prompts", prompt_create, name="prompt-create")
    router.add_get("/prompts/{key}", prompt_page, name="prompt")
    router.add_post("/prompts/{key}/edit", change(edit), name="prompt-edit")
    router.add_post("/prompts/{key}/label", change(move_label), name="prompt-label")
    router.add_post("/prompts/{key}/active", change(activate), name="prompt-active")
    router.add_post("/prompts/{key}/preview", preview, name="prompt-preview")
    router.add_post("/prompts/{key}/run", run, name="playground-run")
