"""The dashboard and the request log, in chromium, on a running stack: the report's charts render
(every SVG drew shapes) and narrow to a model through the filter form; the budget table updates
while the page is open as budget events arrive; a request made through the gateway shows up at
the top of the request log, a filter finds it, and a click shows its reply. No page logs a
console error or fails a request. In metadata-only privacy mode, a request's page says its
content is not kept."""

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from console_stack import browser, console_stack, log_in

from llmbus.report import charts
from llmbus.shared.settings import Settings
from support import browser_missing, wait_for, with_budgets

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
BUDGET = {"name": "red-daily", "scope": {"team": "red"}, "window": "daily",
          "limit_usd": "0.0003", "mode": "soft", "thresholds": [0.5, 0.8, 1.0]}  # fmt: skip
SHAPES = "rect, path, polyline, line, circle"
CHART_STATS = f"""els => els.map(e => ({{
    name: e.dataset.chart, shapes: e.querySelectorAll('{SHAPES}').length,
    width: e.getBoundingClientRect().width, text: e.textContent }}))"""


async def chart_stats(page: Any) -> dict[str, dict[str, Any]]:
    stats = await page.eval_on_selector_all("#charts svg[data-chart]", CHART_STATS)
    return {chart["name"]: chart for chart in stats}


async def test_the_dashboard_and_the_request_log(config_file: Path, settings: Settings) -> None:
    budgeted = with_budgets(config_file, BUDGET)
    async with console_stack(budgeted) as stack, browser(stack.url) as (page, watch):
        await stack.complete("hello", model="fake-gpt")
        await stack.complete("hello", model="slow-200")
        await stack.projected()
        await log_in(page, stack.admin_key)

        drawn = await chart_stats(page)
        assert set(drawn) == set(charts.CHARTS)
        assert all(chart["shapes"] > 0 and chart["width"] > 0 for chart in drawn.values())
        assert "fake-gpt" in drawn["cost-per-day"]["text"]
        assert "slow-200" in drawn["latency"]["text"] and "ann" in drawn["top-users"]["text"]
        await page.fill("input[name=model]", "fake-gpt")
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url("**model=fake-gpt**")
        latency = page.locator("#charts svg[data-chart=latency]")
        await wait_for(lambda: lacks(latency, "slow-200"), 20, "the charts of fake-gpt alone")
        assert "fake-gpt" in (await chart_stats(page))["cost-per-day"]["text"]

        # the budget table, live: spend moves, and a crossed threshold is announced
        row = page.locator("#budgets tr[data-budget=red-daily]")
        before = await row.inner_text()

        async def announced() -> bool:
            await stack.complete("hello again", model="fake-gpt")
            return await page.locator("#budget-notices li").count() > 0

        await wait_for(announced, 60, "a budget event on the open dashboard")
        assert "red-daily reached" in await page.inner_text("#budget-notices")
        await wait_for(lambda: changed(row, before), 15, "the budget row to update")
        watch.assert_clean()

        # the request log: the newest request on top, found by its workflow, opened by a click
        await page.goto("/ui/requests")
        made = await stack.complete("log me", model="fake-gpt", **{"X-Llmbus-Workflow-Id": "wf-9"})
        await stack.projected()
        await page.reload()
        top = page.locator("#request-log tbody tr[data-request-id]").first
        assert await top.get_attribute("data-request-id") == made["request_id"]
        await page.fill("input[name=workflow]", "wf-9")
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url("**workflow=wf-9**")
        rows = page.locator("#request-log tbody tr[data-request-id]")
        assert await rows.count() == 1
        await rows.first.locator("td").first.click()
        await page.wait_for_selector(f"#request-detail [data-request='{made['request_id']}']")
        reply = made["choices"][0]["message"]["content"]
        assert await page.inner_text("#request-content") == reply
        assert "ann" in await page.inner_text("#request-detail")
        watch.assert_clean()


async def lacks(element: Any, text: str) -> bool:
    return text not in await element.text_content()


async def changed(row: Any, before: str) -> bool:
    return await row.inner_text() != before


async def test_metadata_only_mode_keeps_the_content_off_the_request_page(
    settings: Settings,
) -> None:
    private = settings.model_copy(
        update={"completion": settings.completion.model_copy(update={"privacy": "metadata_only"})}
    )
    async with console_stack(private) as stack:
        made = await stack.complete("a private question", model="fake-gpt")
        await stack.projected()
        # a cookie jar that keeps a cookie of 127.0.0.1, as a browser does
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            login = {"key": stack.admin_key, "next": f"/ui/requests/{made['request_id']}"}
            async with session.post(
                f"{stack.url}/ui/login", data=login, headers={"Origin": stack.url}
            ) as response:
                assert response.status == 200 and response.url.path == login["next"]
                page = await response.text()

    assert "not kept" in page and "metadata-only privacy mode" in page
    assert made["choices"][0]["message"]["content"] not in page
    assert "fake-gpt" in page, "its usage row is shown"
