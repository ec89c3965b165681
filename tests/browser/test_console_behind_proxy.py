"""The console behind a proxy that terminates TLS: the browser's forms carry the proxy's https
origin, which the gateway (on plain http, under its own host) cannot see. Without
gateway.public_url it refuses them and says what to set; with it, a person logs in and out
through the proxy, the session cookie is Secure, and another site's form is still refused."""

import aiohttp
import pytest
from console_stack import browser, console_stack, log_in
from tls_front import tls_front

from llmbus.shared.settings import Settings
from support import browser_missing, running_gateway

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")


async def test_the_console_works_through_a_tls_proxy_once_public_url_names_it(
    settings: Settings,
) -> None:
    async with console_stack(settings) as stack, tls_front() as front:
        front.upstream = stack.url  # a gateway that does not know about the proxy
        async with browser(front.url, ignore_https_errors=True) as (page, watch):
            await page.goto("/ui/prompts")
            assert page.url.startswith(f"{front.url}/ui/login"), "redirects stay on the proxy"
            watch.expected = {"/ui/login"}  # refused, as it must be without public_url
            await page.fill("input[name=key]", stack.admin_key)
            await page.click("#login button[type=submit]")
            refusal = await page.inner_text("body")
            assert "gateway.public_url" in refusal and front.url in refusal
            assert await page.context.cookies() == []

        async with running_gateway(settings, public_url=front.url) as told:
            front.upstream = told
            async with browser(front.url, ignore_https_errors=True) as (page, watch):
                await log_in(page, stack.admin_key, "/ui/prompts")
                [cookie] = await page.context.cookies()
                assert (cookie["secure"], cookie["httpOnly"], cookie["path"]) == (True, True, "/ui")
                await page.click("form.who button")
                await page.wait_for_url("**/ui/login")
                watch.assert_clean()

            jar = {"llmbus_console": stack.admin_key}
            async with aiohttp.ClientSession(cookies=jar) as session:
                huge = "https://" + "a" * 5000 + ".example"
                for origin, status in (
                    ("https://evil.example", 403),
                    (huge, 403),
                    (front.url, 303),
                ):
                    async with session.post(
                        f"{front.url}/ui/logout", headers={"Origin": origin}, ssl=False,
                        allow_redirects=False,
                    ) as response:  # fmt: skip
                        assert response.status == status, origin[:40]
                        assert len(await response.text()) < 600  # an Origin echoed, bounded
