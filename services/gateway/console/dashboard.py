"""/ui: the usage report's charts for a period and filters, and the budgets, kept live.

The charts are the report's own (llmbus.report: collect's queries, charts' SVG, the page's
captions). The budget table is drawn on the server and sent again, whole, on /ui/events/budgets
each time a budget event arrives, and every few seconds besides, as spend moves between them.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from llmbus.client.budgets import BudgetEvent
from llmbus.report import charts
from llmbus.report.data import Report, collect
from llmbus.report.page import SECTIONS, summary
from llmbus.services.gateway.console.forms import Period, period
from llmbus.services.gateway.console.parts import client, console, gateway
from llmbus.services.gateway.console.render import fragment, page, sse
from llmbus.services.gateway.domain.openai import model_list
from llmbus.shared.contracts.budget import BudgetExceeded
from llmbus.shared.errors import LlmbusError
from llmbus.shared.money import usd

# how often an open dashboard reads the budgets' spend when no event came
REFRESH_S = 5.0


async def dashboard(request: web.Request) -> web.StreamResponse:
    chosen = period(request.query, datetime.now(UTC).date())
    report = await collect(client(request), chosen.since, chosen.until, filters=chosen.filters)
    context = charts_context(report, chosen) | {"models": model_names(request)}
    if request.query.get("partial") == "charts":  # the filter form, swapped in by the script
        return page(request, "_charts.html", **context)
    return page(request, "dashboard.html", **context)


def charts_context(report: Report, chosen: Period) -> dict[str, Any]:
    figures = [(draw(report), caption) for draw, caption in SECTIONS]
    teams = sorted({str(row["team"]) for row in report.top_teams if row.get("team")})
    return {"report": report, "period": chosen, "figures": figures, "summary": summary(report),
            "budgets": report.budgets, "teams": teams}  # fmt: skip


def model_names(request: web.Request) -> list[str]:
    return [model["id"] for model in model_list(gateway(request).settings, 0)["data"]]


async def budget_events(request: web.Request) -> web.StreamResponse:
    """The budget table as server-sent events: now, on each budget event, and every REFRESH_S
    seconds; until the page closes or the gateway stops."""
    parts = console(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        async with parts.feed.listening(client(request).nc) as events:
            event: BudgetEvent | None = None
            while not parts.closing.is_set():
                if event is not None:
                    await response.write(sse("notice", notice(event)))
                await response.write(await budget_table(request))
                event = await next_event(events, parts.closing)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the page was closed
    return response


async def budget_table(request: web.Request) -> bytes:
    try:
        status = await client(request).budgets.status()
    except LlmbusError as exc:  # the usage service is away: the next tick asks again
        return sse("problem", f"budgets not updated: {exc}")
    rows = [row.model_dump(mode="json") for row in status]
    return sse("budgets", fragment(console(request).env, "_budgets.html", budgets=rows))


async def next_event(
    events: "asyncio.Queue[BudgetEvent]", closing: asyncio.Event
) -> BudgetEvent | None:
    """The next budget event; None after REFRESH_S without one, or when the gateway stops."""
    event = asyncio.ensure_future(events.get())
    stopping = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait(
            {event, stopping}, timeout=REFRESH_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:  # the page may have closed meanwhile: nothing is left waiting
        event.cancel()
        stopping.cancel()
    return event.result() if event.done() and not event.cancelled() else None


def notice(event: BudgetEvent) -> str:
    when = event.occurred_at.strftime("%H:%M:%S")
    if isinstance(event, BudgetExceeded):
        done = "refused" if event.mode == "hard" else "went over it"
        return (
            f"{when} · {event.budget} exceeded its {event.mode} limit of "
            f"{usd(event.limit_usd)}: request {event.request_id} {done}"
        )
    return f"{when} · {event.budget} reached {charts.percent(event.threshold)} of its limit"
