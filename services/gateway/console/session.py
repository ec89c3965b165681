"""Who may use the console: the holder of an admin gateway key.

/ui/login takes the key in a form (a POST: never in a URL), checks it with the gateway's own key
check, and keeps it in an HttpOnly, SameSite=Strict cookie scoped to /ui: no script of a page
can read it, and no other site's page can send it. Every console request is checked again, so a
key revoked or expired closes its sessions at once. Every POST must come from a console page
(its Origin: the gateway's own, or gateway.public_url's behind a proxy), and the key is never
written to a page, a URL or a log.
"""

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import hdrs, web

from llmbus.services.gateway.console.forms import safe_next, same_origin
from llmbus.services.gateway.console.parts import ADMIN, gateway
from llmbus.services.gateway.console.render import PREFIX, page
from llmbus.shared.contracts.keys import KeyInfo
from llmbus.shared.errors import UnauthorizedError

COOKIE = "llmbus_console"
# routes open without a session: the login page, and what it is drawn with
OPEN = frozenset({"login", "login-post", "static"})
# routes a script reads (a stream, an event source): refused with a status, not redirected
SCRIPTED = frozenset({"budget-events", "chat-stream", "playground-run"})
MAX_SHOWN_ORIGIN = 200  # an Origin is echoed in a refusal: no longer than a real one
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def admin_of(request: web.Request, key: str | None) -> KeyInfo | None:
    """The key's holder if it is a valid admin key; None for any other."""
    if not key:
        return None
    try:
        info = await gateway(request).keys.identify(f"Bearer {key}")
    except UnauthorizedError:
        return None
    return info if info.admin else None


@web.middleware
async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        cross_site(request)
    if route in OPEN:
        return await handler(request)
    info = await admin_of(request, request.cookies.get(COOKIE))
    if info is None:
        if request.method == hdrs.METH_GET and route not in SCRIPTED:
            raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(request.path_qs, safe='/')}")
        raise web.HTTPUnauthorized(text="log in to the console first, with an admin key")
    request[ADMIN] = info
    return await handler(request)


def cross_site(request: web.Request) -> None:
    """Refuse a POST whose Origin is not the console's; it names the setting a proxy needs."""
    origin, public = (
        request.headers.get(hdrs.ORIGIN),
        gateway(request).settings.gateway.public_origin,
    )
    if not same_origin(origin, request.scheme, request.host, public):
        shown = (origin or "no origin")[:MAX_SHOWN_ORIGIN]  # what a client sent, bounded
        raise web.HTTPForbidden(
            text=f"refused: this form came from {shown}, not from the console at "
            f"{public or f'{request.scheme}://{request.host}'}. If a proxy in front of the gateway "
            "serves the console, set gateway.public_url to the URL browsers open."
        )


async def login_page(request: web.Request) -> web.StreamResponse:
    return page(request, "login.html", next=safe_next(request.query.get("next")))


async def log_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    key, target = str(form.get("key", "")).strip(), safe_next(str(form.get("next", "")))
    try:
        info = await gateway(request).keys.identify(f"Bearer {key}")
    except UnauthorizedError:
        return refused(request, target, 401, "This key is unknown, revoked or expired.")
    if not info.admin:
        message = "This key is not an admin key: create one with `llmbus keys create --admin`."
        return refused(request, target, 403, message)
    done = web.HTTPSeeOther(target)
    # the Origin was checked: https there means the browser's side is TLS, whatever is behind it
    secure = request.secure or request.headers.get(hdrs.ORIGIN, "").startswith("https://")
    done.set_cookie(COOKIE, key, path=PREFIX, httponly=True, samesite="Strict", secure=secure)
    raise done


def refused(request: web.Request, target: str, status: int, message: str) -> web.Response:
    return page(request, "login.html", status, next=target, error=message)


async def log_out(request: web.Request) -> web.StreamResponse:
    done = web.HTTPSeeOther(f"{PREFIX}/login")
    done.del_cookie(COOKIE, path=PREFIX)
    raise done
