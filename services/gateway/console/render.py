"""The console's pages: Jinja2 templates shipped in the package, escaped by default, and the
headers every console response carries."""

from datetime import datetime
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from llmbus.report.charts import percent
from llmbus.services.gateway.console.forms import template_text
from llmbus.services.gateway.console.parts import ADMIN, CONSOLE
from llmbus.shared.money import usd

PREFIX = "/ui"
NOTHING = "\u2013"  # an en dash: no value (a request that never answered has no latency)
# nothing but the console's own origin: no CDN, no inline script, no framing by another site
POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold usage and prompts: no copy left in a cache
}


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("llmbus.services.gateway.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=money, ms=milliseconds, when=when, percent=share, svg=Markup,
                       template_text=template_text)  # fmt: skip
    env.globals["base"] = PREFIX
    return env


def money(value: Any) -> str:
    return usd(value) if isinstance(value, int | float) else NOTHING


def milliseconds(value: Any) -> str:
    return f"{value:,.0f} ms" if isinstance(value, int | float) else NOTHING


def share(value: Any) -> str:
    return percent(float(value)) if isinstance(value, int | float) else NOTHING


def when(value: Any) -> str:
    """A time as the console shows it: UTC, to the second."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return NOTHING


def fragment(env: Environment, name: str, **context: Any) -> str:
    return env.get_template(name).render(**context)


def page(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("me", request.get(ADMIN))
    context.setdefault("here", request.path)
    body = fragment(request.app[CONSOLE].env, name, **context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def sse(event: str, data: str) -> bytes:
    """One server-sent event; each line of `data` on a data: line of its own."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


async def secured(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every console response, streams and redirects included."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
