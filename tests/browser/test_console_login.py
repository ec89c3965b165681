"""Only an admin key opens the console: a page without the session cookie sends the browser to
the login form, which refuses a user's key and an unknown one; the admin key's cookie is
HttpOnly, SameSite=Strict and scoped to /ui, the key shows in no page and no URL, a POST from
another site is refused, logging out ends the session, and a revoked key ends it at once."""

import aiohttp
import pytest
from console_stack import browser, console_stack, log_in

from llmbus.shared.settings import Settings
from support import browser_missing

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
PAGES = ("/ui", "/ui/requests", "/ui/prompts", "/ui/chat?user=ann")


async def test_only_an_admin_key_opens_the_console(settings: Settings) -> None:
    async with console_stack(settings) as stack, browser(stack.url) as (page, watch):
        for path in PAGES:
            await page.goto(path)
            assert page.url.startswith(f"{stack.url}/ui/login?next="), path
        assert await page.locator("input[name=key][type=password]").count() == 1

        watch.expected = {"/ui/login"}  # the refusals below answer 401 and 403, as they should
        for key, said in ((stack.user_key, "not an admin key"), ("sk-llmbus-nope", "unknown")):
            await page.fill("input[name=key]", key)
            await page.click("#login button[type=submit]")
            await page.wait_for_selector(".error")
            assert said in await page.inner_text(".error")
            assert "/ui/login" in page.url
        assert await page.context.cookies() == []
        watch.expected = set()

        await log_in(page, stack.admin_key, "/ui/requests?user=ann")
        [cookie] = await page.context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
        assert await page.evaluate("document.cookie") == ""
        for path in PAGES:
            response = await page.goto(path)
            assert page.url == f"{stack.url}{path}"
            assert stack.admin_key not in await page.content()
            assert response is not None and response.headers["content-security-policy"].startswith(
                "default-src 'self'"
            )
            assert response.headers["cache-control"] == "no-store"
        watch.assert_clean()

        # a form posted from another site's page: its Origin gives it away
        jar = {"llmbus_console": stack.admin_key}
        async with aiohttp.ClientSession(cookies=jar) as session:
            for origin, status in (("http://evil.example", 403), (None, 403), (stack.url, 303)):
                async with session.post(
                    f"{stack.url}/ui/logout", headers={"Origin": origin} if origin else {},
                    allow_redirects=False,
                ) as response:  # fmt: skip
                    assert response.status == status, origin

        await page.click("form.who button")
        await page.wait_for_url("**/ui/login")
        await page.goto("/ui")
        assert "/ui/login" in page.url

        await log_in(page, stack.admin_key)
        watch.expected = {"/ui/events/budgets"}  # the dashboard's live table, refused from now on
        [key] = [k for k in await stack.client.keys.list() if k.admin]
        await stack.client.keys.revoke(key.key_id)
        await page.goto("/ui/prompts")
        assert "/ui/login" in page.url, "a revoked key's session ends at once"
        watch.assert_clean()
