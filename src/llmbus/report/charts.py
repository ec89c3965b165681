"""The report's charts: each takes the rows of a usage query (or of the budgets' status), as
dicts, and returns one <svg> string. No I/O and no JavaScript, so the HTML report and the web
console can serve the very same charts.

Each <svg> carries data-chart="<name>", with the names in CHARTS.
"""

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from llmbus.report.svg import (
    INK,
    MUTED,
    PALETTE,
    Frame,
    bands,
    category_labels,
    chart,
    label,
    legend,
    legend_top,
    nice_ceiling,
    no_data,
    rect,
    short,
    text,
    x_axis,
    y_axis,
)
from llmbus.shared.money import usd

Rows = Sequence[Mapping[str, Any]]
CHARTS = ("cost-per-day", "top-users", "top-teams", "latency", "error-rate", "budgets")
PERCENTILES = (("latency_ms_p50", "p50"), ("latency_ms_p95", "p95"), ("latency_ms_p99", "p99"))
ERROR_RED = "#e15759"


def number(value: Any) -> float:
    """A metric as a float: a group with nothing to measure (no latency of a call that never
    answered) has None there; NaN or infinity would put shapes nowhere."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def cost_per_day(rows: Rows) -> str:
    """Columns per day, stacked by model; rows of a query by day and model, with cost_usd."""
    name, title = "cost-per-day", "Cost per day, by model"
    if not rows:
        return no_data(name, title)
    cost: dict[str, dict[str, float]] = defaultdict(dict)
    by_model: dict[str, float] = defaultdict(float)
    for row in rows:
        day, model = label(row.get("day")), label(row.get("model"))
        cost[day][model] = cost[day].get(model, 0.0) + number(row.get("cost_usd"))
        by_model[model] += number(row.get("cost_usd"))
    days = sorted(cost)
    models = sorted(by_model, key=lambda m: (-by_model[m], m))  # the biggest at the bottom
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    items = [(m, colours[m]) for m in models]
    frame = Frame(height=320, top=legend_top(items))
    top = nice_ceiling(max(sum(day.values()) for day in cost.values()))
    body = [*y_axis(frame, top, usd, "cost (USD)"), *legend(items)]
    centers, width = bands(frame, len(days))
    for day, center in zip(days, centers, strict=True):
        base = 0.0
        for model in models:
            value = cost[day].get(model, 0.0)
            y = frame.y(base + value, top)
            tip = f"{day} · {model}: {usd(value)} (day total {usd(sum(cost[day].values()))})"
            body.append(rect(center - width / 2, y, width, frame.y(base, top) - y,
                             colours[model], tip))  # fmt: skip
            base += value
    body += category_labels(frame, days, centers)
    return chart(name, title, frame, body)


def top_users(rows: Rows) -> str:
    """The users who cost most; rows of a query by user, with cost_usd (and requests)."""
    return top_spenders(rows, "user", "top-users", "Top users by cost")


def top_teams(rows: Rows) -> str:
    return top_spenders(rows, "team", "top-teams", "Top teams by cost")


def top_spenders(rows: Rows, field: str, name: str, title: str) -> str:
    """Horizontal bars, most expensive first, each with its cost at its end."""
    if not rows:
        return no_data(name, title)
    ranked = sorted(rows, key=lambda row: -number(row.get("cost_usd")))
    frame = Frame(height=44 + 26 * len(ranked) + 44, left=150, right=80, top=44)
    top = nice_ceiling(max(number(row.get("cost_usd")) for row in ranked))
    body = x_axis(frame, top, usd, "cost (USD)")
    for i, row in enumerate(ranked):
        who, cost = label(row.get(field)), number(row.get("cost_usd"))
        y = frame.y1 + 26 * i + 5
        requests = row.get("requests")
        tip = f"{field} {who}: {usd(cost)}" + (f", {requests} requests" if requests else "")
        body.append(text(frame.x0 - 8, y + 12, short(who, 22), anchor="end"))
        body.append(rect(frame.x0, y, frame.x(cost, top) - frame.x0, 16, PALETTE[0], tip))
        body.append(text(frame.x(cost, top) + 6, y + 12, usd(cost), fill=MUTED))
    return chart(name, title, frame, body)


def latency_by_model(rows: Rows) -> str:
    """p50, p95 and p99 side by side per model; rows of a query by model with those metrics."""
    name, title = "latency", "Latency percentiles by model"
    measured = [row for row in rows if any(row.get(key) is not None for key, _ in PERCENTILES)]
    if not measured:
        return no_data(name, title)
    measured = sorted(measured, key=lambda row: label(row.get("model")))
    items = [(shown, PALETTE[i]) for i, (_, shown) in enumerate(PERCENTILES)]
    frame = Frame(height=320, top=legend_top(items))
    top = nice_ceiling(max(number(row.get(key)) for row in measured for key, _ in PERCENTILES))
    body = [*y_axis(frame, top, ms, "latency (ms)"), *legend(items)]
    centers, width = bands(frame, len(measured))
    bar = width / len(PERCENTILES)
    for row, center in zip(measured, centers, strict=True):
        model = label(row.get("model"))
        for i, (key, shown) in enumerate(PERCENTILES):
            if row.get(key) is None:
                continue
            value, x = number(row.get(key)), center - width / 2 + bar * i
            y = frame.y(value, top)
            body.append(
                rect(x, y, bar - 1, frame.y0 - y, PALETTE[i], f"{model} {shown}: {ms(value)}")
            )
    models = [label(row.get("model")) for row in measured]
    body += category_labels(frame, models, centers)
    return chart(name, title, frame, body)


def error_rate_per_day(rows: Rows) -> str:
    """Share of requests that failed, per day; rows of a query by day with error_rate (and
    requests and errors, for the tooltips)."""
    name, title = "error-rate", "Error rate per day"
    if not rows:
        return no_data(name, title)
    days = sorted(rows, key=lambda row: label(row.get("day")))
    worst = max(number(row.get("error_rate")) for row in days)
    top = min(1.0, nice_ceiling(worst)) if worst > 0 else 0.1  # a flat 0% still has an axis
    frame = Frame(height=280, top=44)
    body = y_axis(frame, top, percent, "failed requests")
    centers, width = bands(frame, len(days))
    for row, center in zip(days, centers, strict=True):
        rate, y = number(row.get("error_rate")), frame.y(number(row.get("error_rate")), top)
        tip = f"{label(row.get('day'))}: {percent(rate)} failed"
        if row.get("requests") is not None:
            tip += f" ({row.get('errors', '?')} of {row['requests']} requests)"
        body.append(rect(center - width / 2, y, width, frame.y0 - y, ERROR_RED, tip))
        if len(days) <= 14:  # room for each day's value over its bar
            body.append(text(center, y - 4, percent(rate), anchor="middle", fill=MUTED))
    body += category_labels(frame, [label(row.get("day")) for row in days], centers)
    return chart(name, title, frame, body)


def budget_status(rows: Rows) -> str:
    """Each budget's spend against its limit in its current window: a track for the limit, a
    bar for what is spent, a paler one for what is reserved; rows of budgets.status()."""
    name, title = "budgets", "Budgets: spent of limit, current window"
    if not rows:
        return no_data(name, title)
    frame = Frame(height=44 + 40 * len(rows) + 16, left=160, right=190, top=44)
    track = frame.x1 - frame.x0
    body = []
    for i, row in enumerate(sorted(rows, key=lambda row: str(row.get("name")))):
        spent, limit = number(row.get("spent_usd")), number(row.get("limit_usd"))
        reserved, pct = number(row.get("reserved_usd")), number(row.get("percent"))
        y = frame.y1 + 40 * i
        colour = ERROR_RED if pct >= 100 else PALETTE[1] if pct >= 80 else PALETTE[2]
        shown = min(pct, 100.0) / 100 * track
        held = min(reserved / limit * track, track - shown) if limit else 0.0
        body.append(text(frame.x0 - 8, y + 12, short(label(row.get("name")), 24), anchor="end"))
        body.append(text(frame.x0 - 8, y + 25, budget_kind(row), anchor="end", fill=MUTED,
                         font_size="10"))  # fmt: skip
        body.append(rect(frame.x0, y, track, 18, "#e9ecef", budget_tip(row)))
        body.append(rect(frame.x0, y, shown, 18, colour, budget_tip(row)))
        body.append(rect(frame.x0 + shown, y, held, 18, colour + "66", f"reserved {usd(reserved)}"))
        body.append(text(frame.x1 + 8, y + 13, f"{usd(spent)} of {usd(limit)} · {pct:.0f}%",
                         fill=ERROR_RED if pct >= 100 else INK))  # fmt: skip
    return chart(name, title, frame, body)


def budget_kind(row: Mapping[str, Any]) -> str:
    return f"{label(row.get('window'))} · {label(row.get('mode'))}"


def budget_tip(row: Mapping[str, Any]) -> str:
    scope = row.get("scope") or {}
    where = ", ".join(f"{k}={v}" for k, v in scope.items()) if isinstance(scope, dict) else ""
    return (
        f"{label(row.get('name'))} ({budget_kind(row)}; scope: {where or 'every request'}): "
        f"spent {usd(number(row.get('spent_usd')))} of {usd(number(row.get('limit_usd')))} "
        f"({number(row.get('percent')):.1f}%), reserved {usd(number(row.get('reserved_usd')))}"
    )


def ms(value: float) -> str:
    return f"{value:,.0f} ms"


def percent(value: float) -> str:
    """A share as a percentage, with a decimal only where it has one: 10%, 2.5%."""
    shown = round(value * 100, 1)
    return f"{shown:.0f}%" if shown.is_integer() else f"{shown:.1f}%"
