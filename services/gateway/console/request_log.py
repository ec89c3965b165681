"""/ui/requests: the latest requests, newest first (the usage rows, llmbus.usage.rows in desc
order), filtered by workflow, conversation and user; /ui/requests/<id>: one request, its usage
rows and how it ended (llmbus.completion.status), with its content only when the privacy mode
keeps it."""

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from llmbus.services.gateway.console.forms import chosen, cursor
from llmbus.services.gateway.console.parts import client, gateway
from llmbus.services.gateway.console.render import page
from llmbus.shared.contracts import UsageRowsQuery
from llmbus.shared.errors import LlmbusError

FILTERS = ("workflow", "conversation", "user")
PAGE_ROWS = 50
NOT_KEPT = (
    "Its content is not kept: llmbus runs in metadata-only privacy mode "
    "(completion.privacy), so only its ids, tokens, cost and timing were stored."
)


async def request_log(request: web.Request) -> web.StreamResponse:
    filters = chosen(request.query, FILTERS)
    query = UsageRowsQuery.model_validate({
        "filters": filters, "order": "desc", "limit": PAGE_ROWS,
        "after": cursor(request.query, "after") or 0, "through": cursor(request.query, "through"),
    })  # fmt: skip
    rows = await client(request).usage.row_page(query)
    older = None
    if rows.next_after is not None:
        older = filters | {"after": str(rows.next_after), "through": str(rows.through)}
    return page(request, "requests.html", rows=rows.rows, total=rows.total, filters=filters,
                older=older, first=query.after == 0)  # fmt: skip


async def request_detail(request: web.Request) -> web.StreamResponse:
    request_id = request.match_info["request_id"]
    try:
        query = UsageRowsQuery(request_id=request_id, limit=20)
    except ValidationError:
        raise web.HTTPNotFound(text="no such request id") from None
    calls = (await client(request).usage.row_page(query)).rows
    context: dict[str, Any] = {
        "request_id": request_id, "calls": calls, "state": None, "outcome": None,
        "problem": None, "content": None, "kept": True, "not_kept": NOT_KEPT,
    }  # fmt: skip
    try:
        status = await client(request).status(request_id)
    except LlmbusError as exc:
        context["problem"] = f"how it ended is unknown now: {exc}"
    else:
        context |= {"state": status.status, "outcome": status.outcome or {}}
        context |= content_of(status.outcome or {}, gateway(request).settings.completion.privacy)
    name = "_request.html" if request.query.get("partial") else "request.html"
    return page(request, name, **context)


def content_of(outcome: dict[str, Any], privacy: str) -> dict[str, Any]:
    """What the page may show of a request's reply: in metadata-only mode, that it is not kept."""
    if privacy != "full":
        return {"content": None, "kept": False}
    return {"content": outcome.get("content"), "kept": True}
