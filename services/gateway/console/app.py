"""The web console: an aiohttp application the gateway mounts at /ui (`gateway_app(...,
mounts=)`), in the gateway's process and on its NATS connection.

Every page needs an admin key's session (session.py). Pages are drawn on the server; one small
ES module (static/console.js) streams replies, keeps the budget table live and swaps filtered
fragments in. Both static files ship in the wheel and are served from memory, and the
Content-Security-Policy lets a page load nothing from elsewhere (render.py).
"""

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import hdrs, web

from llmbus.services.gateway.console import chat, prompts
from llmbus.services.gateway.console.dashboard import budget_events, dashboard
from llmbus.services.gateway.console.parts import CONSOLE, Console
from llmbus.services.gateway.console.render import environment, page, secured
from llmbus.services.gateway.console.request_log import request_detail, request_log
from llmbus.services.gateway.console.session import SCRIPTED, guarded, log_in, log_out, login_page
from llmbus.services.gateway.domain import errors
from llmbus.shared.errors import LlmbusError

STATIC = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page whose data could not be had says why, on a page; a script's stream gets the
    gateway's JSON error instead (its middleware, outside this one)."""
    try:
        return await handler(request)
    except LlmbusError as exc:
        if request.match_info.route.name in SCRIPTED:
            raise
        # a bare LlmbusError: a service did not answer (the SDK says which)
        failure = errors.unavailable(str(exc)) if type(exc) is LlmbusError else errors.error(exc)
        return page(request, "error.html", failure.status, message=failure.message)


def static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, content type, ETag), read once from the package."""
    folder = resources.files("llmbus.services.gateway.console") / "static"
    served = {}
    for name, kind in STATIC.items():
        body = (folder / name).read_bytes()
        served[name] = (body, kind, f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return served


def static_handler(files: dict[str, tuple[bytes, str, str]]) -> Handler:
    async def static(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind, etag = found
        headers = {hdrs.ETAG: etag, hdrs.CACHE_CONTROL: "no-cache"}  # revalidated: 304
        if request.headers.get(hdrs.IF_NONE_MATCH) == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=headers)

    return static


def console_app() -> web.Application:
    app = web.Application(middlewares=[guarded, problems])
    parts = Console(environment())
    app[CONSOLE] = parts
    app.on_response_prepare.append(secured)

    async def closing(_: web.Application) -> None:
        parts.closing.set()  # the live streams end, rather than hold the gateway's stop

    async def cleanup(_: web.Application) -> None:
        await parts.feed.close()

    app.on_shutdown.append(closing)
    app.on_cleanup.append(cleanup)
    router = app.router
    router.add_get("/static/{name}", static_handler(static_files()), name="static")
    router.add_get("/login", login_page, name="login")
    router.add_post("/login", log_in, name="login-post")
    router.add_post("/logout", log_out, name="logout")
    router.add_get("", dashboard, name="dashboard")
    router.add_get("/", dashboard)
    router.add_get("/events/budgets", budget_events, name="budget-events")
    router.add_get("/requests", request_log, name="requests")
    router.add_get("/requests/{request_id}", request_detail, name="request")
    prompts.routes(router)
    chat.routes(router)
    return app
