"""`llmbus report`: one HTML file whose charts render in a real browser, with no script error and
no request but the file itself; and chart functions that escape what data says and show "no
data" for no rows. The browser is Debian's chromium driven by Playwright (`make test` installs
chromium where apt-get can); without either, the browser tests skip and say why."""

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmbus.client import CompletionError
from llmbus.report import charts
from llmbus.report.data import Report
from llmbus.report.page import render, write
from llmbus.shared.settings import Settings
from support import (
    browser_missing,
    chromium,
    llmbus_cli,
    pipeline,
    projected_requests,
    wait_for,
    with_budgets,
)

# chosen by whoever sends requests; unescaped, it would fetch (a network request) or run
HOSTILE = '<img src="https://evil.example/x.png"><script>window.pwned=1</script>'
CALLS = [("fake-gpt", "ann", "team-a"), ("fake-gpt", "bob", "team-a"),
         ("slow-200", HOSTILE, "team-b"), ("slow-200", "ann", "team-b")]  # fmt: skip
BUDGET = {"name": "team-a-daily", "scope": {"team": "team-a"}, "window": "daily",
          "limit_usd": "1", "mode": "soft"}  # fmt: skip
SVG = "{http://www.w3.org/2000/svg}"


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")

# every shape a chart may draw with
SHAPES = "rect, path, polyline, line, circle"
CHART_STATS = f"""els => els.map(e => ({{
    name: e.dataset.chart, shapes: e.querySelectorAll('{SHAPES}').length,
    width: e.getBoundingClientRect().width, height: e.getBoundingClientRect().height,
    text: e.textContent }}))"""


async def open_in_browser(path: Path) -> dict[str, Any]:
    """Load the file in headless chromium; what each chart drew, the errors and the requests."""
    from playwright.async_api import async_playwright

    errors: list[str] = []
    requests: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium())
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            # whatever the page asks for beyond itself is recorded above, and never sent
            await page.route("**/*", lambda route: refuse_all_but(route, path.as_uri()))
            await page.goto(path.as_uri(), wait_until="load", timeout=30_000)
            stats = await page.eval_on_selector_all("svg[data-chart]", CHART_STATS)
            scripts = await page.evaluate("document.querySelectorAll('script, img').length")
            pwned = await page.evaluate("window.pwned === 1")
        finally:
            await browser.close()
    return {"charts": {s["name"]: s for s in stats}, "errors": errors, "requests": requests,
            "scripts": scripts, "pwned": pwned}  # fmt: skip


async def refuse_all_but(route: Any, uri: str) -> None:
    await (route.continue_() if route.request.url == uri else route.abort())


def assert_renders_offline(loaded: dict[str, Any], path: Path) -> None:
    assert set(loaded["charts"]) == set(charts.CHARTS)
    for name, chart in loaded["charts"].items():
        assert chart["shapes"] > 0, f"chart {name} drew nothing"
        assert chart["width"] > 0 and chart["height"] > 0, f"chart {name} has no size"
    assert loaded["errors"] == []
    assert loaded["requests"] == [path.as_uri()], "the page asked for more than itself"
    assert loaded["scripts"] == 0 and not loaded["pwned"]


@needs_browser
async def test_the_report_of_a_running_stack_renders_every_chart_offline(
    config_file: Path, settings: Settings, tmp_path: Path
) -> None:
    budgeted = with_budgets(config_file, BUDGET)
    async with pipeline(budgeted) as (_, _, client):
        for model, user, team in CALLS:
            await client.complete("hello", model=model, user_id=user, team_id=team)
        with pytest.raises(CompletionError):
            await client.complete("hello", model="fail-401", user_id="bob", team_id="team-b")

        async def projected() -> bool:
            return await projected_requests(client) == len(CALLS) + 1

        await wait_for(projected, 30, "the usage service to project every call")
        out = tmp_path / "out" / "report.html"
        out.parent.mkdir()
        done = await asyncio.to_thread(llmbus_cli, "report", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert str(out.resolve()) in done.stdout.replace("\n", "")
        old = await asyncio.to_thread(
            llmbus_cli, "report", "-o", str(tmp_path / "old.html"), "--until", "2001-01-01"
        )
        assert old.returncode == 0, old.stderr
        bad = await asyncio.to_thread(llmbus_cli, "report", "--since", "last tuesday")
        assert bad.returncode == 1 and "--since must be an ISO date" in bad.stderr

    loaded = await open_in_browser(out)
    assert_renders_offline(loaded, out)
    found = loaded["charts"]
    assert "fake-gpt" in found["cost-per-day"]["text"] and "slow-200" in found["latency"]["text"]
    assert HOSTILE in found["top-users"]["text"], "the id is shown as text, whole in its tooltip"
    assert "team-a-daily" in found["budgets"]["text"]
    assert "20% failed (1 of 5 requests)" in found["error-rate"]["text"]
    # a period before any call: the usage charts say so, the budgets still show
    before = (await open_in_browser(tmp_path / "old.html"))["charts"]
    assert "no data" in before["cost-per-day"]["text"] and "no data" in before["latency"]["text"]
    assert "team-a-daily" in before["budgets"]["text"]


@needs_browser
async def test_an_empty_report_renders_a_no_data_chart_for_each(tmp_path: Path) -> None:
    path = write(Report(), tmp_path / "empty.html")
    loaded = await open_in_browser(path)
    assert_renders_offline(loaded, path)
    assert all("no data" in chart["text"] for chart in loaded["charts"].values())


# The chart functions alone: rows in, SVG out

DAY = "2026-11-02"
EXAMPLES: dict[str, tuple[Callable[[Any], str], str, dict[str, Any]]] = {
    "cost-per-day": (charts.cost_per_day, "model", {"day": DAY, "cost_usd": 0.012}),
    "top-users": (charts.top_users, "user", {"cost_usd": 0.5, "requests": 3}),
    "top-teams": (charts.top_teams, "team", {"cost_usd": 0.5, "requests": 3}),
    "latency": (charts.latency_by_model, "model", {"latency_ms_p50": 80.0,
                "latency_ms_p95": 200.0, "latency_ms_p99": None}),
    "error-rate": (charts.error_rate_per_day, "day", {"requests": 4, "errors": 1,
                   "error_rate": 0.25}),
    "budgets": (charts.budget_status, "name", {"scope": {"team": "x"}, "window": "daily",
                "spent_usd": 1.5, "reserved_usd": 0.1, "limit_usd": 1.0, "percent": 150.0,
                "mode": "hard"}),
}  # fmt: skip


def parsed(svg: str, name: str) -> ET.Element:
    """The chart as XML: well-formed, an <svg> named `name`."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("data-chart") == name
    return root


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_value_from_data_is_escaped(name: str) -> None:
    function, field, row = EXAMPLES[name]
    svg = function([row | {field: HOSTILE}])
    root = parsed(svg, name)
    assert "<script" not in svg and "<img" not in svg
    assert "&lt;script&gt;" in svg
    assert not list(root.iter(f"{SVG}script"))
    assert HOSTILE in "".join(root.itertext()), "shown as text, whole in a tooltip"
    assert list(root.iter(f"{SVG}rect")), "it drew bars"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_no_rows_give_a_no_data_chart(name: str) -> None:
    function, _, _ = EXAMPLES[name]
    root = parsed(function([]), name)
    assert "no data" in "".join(root.itertext())
    assert list(root.iter(f"{SVG}rect")), "still a framed chart, not an empty <svg>"


def test_the_page_escapes_data_and_holds_every_chart() -> None:
    _, _, budget = EXAMPLES["budgets"]
    report = Report(top_users=[{"user": HOSTILE, "cost_usd": 1.0}],
                    budgets=[budget | {"name": HOSTILE}])  # fmt: skip
    html = render(report)
    assert "<script" not in html and "<img" not in html
    assert all(f'data-chart="{name}"' in html for name in charts.CHARTS)
    assert "default-src 'none'" in html, "the page may fetch nothing"
