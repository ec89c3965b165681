"""What the console's tests run on: the whole stack in this event loop (nats-server with
credentials, the completion, usage and conversation services, the gateway with its own
credentials), an admin key and a user's key, and headless Debian chromium driven by Playwright
that records every console error and every failed request of the pages it opens."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from nats.aio.client import Client as NatsClient

from llmbus.client import Client
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.settings import Settings
from support import (
    EventLog,
    chromium,
    pipeline,
    projected_requests,
    running,
    running_gateway,
    wait_for,
)


@dataclass
class Stack:
    url: str
    admin_key: str
    user_key: str
    client: Client
    nc: NatsClient
    events: EventLog
    settings: Settings
    made: int = 0  # requests answered through complete()

    async def complete(self, content: str, model: str = "fake-gpt", **headers: str) -> Any:
        """A request through the gateway's OpenAI door, with the user's key; its JSON, with the
        request id the gateway answered in its header."""
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        auth = {"Authorization": f"Bearer {self.user_key}", **headers}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/v1/chat/completions", json=body, headers=auth) as response,
        ):
            assert response.status == 200, await response.text()
            self.made += 1
            return await response.json() | {"request_id": response.headers["X-Llmbus-Request-Id"]}

    async def projected(self) -> None:
        """Until the usage projection holds every request complete() made: a page opened after
        this shows them all (the newest may still be on its way when its answer comes)."""
        count = self.made

        async def done() -> bool:
            return await projected_requests(self.client) >= count

        await wait_for(done, 30, f"{count} calls in the usage projection")


@contextlib.asynccontextmanager
async def console_stack(settings: Settings) -> AsyncIterator[Stack]:
    async with (
        pipeline(settings) as (nc, events, client),
        running(serve_conversation, settings),
        running_gateway(settings) as url,
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        admin = await client.keys.create("root", team_id="ops", admin=True, name="console")
        user = await client.keys.create("ann", team_id="red", project_id="apollo")
        yield Stack(url, admin.key, user.key, client, nc, events, settings)


ABORTED = "net::ERR_ABORTED"


@dataclass
class Watch:
    """What went wrong in the browser: console errors (a Content-Security-Policy violation
    among them), uncaught exceptions, failed requests (refused, or answered 4xx/5xx) and any
    request to another origin, except the failures a step expects."""

    origin: str
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)  # URL parts whose failure a step wants

    def on_request(self, request: Any) -> None:
        if not request.url.startswith(self.origin + "/"):
            self.failed.append(f"asked outside the console's origin: {request.url}")

    def on_response(self, response: Any) -> None:
        if response.status >= 400 and not self.wanted(response.url):
            self.failed.append(f"{response.status} {response.url}")

    def on_console(self, message: Any) -> None:
        if message.type == "error" and not self.wanted(message.location.get("url", "")):
            self.errors.append(message.text)

    def on_failed(self, request: Any) -> None:
        if request.failure == ABORTED:
            return  # the browser's own doing: a page left before its icon came, a stream stopped
        if not self.wanted(request.url):
            self.failed.append(f"{request.failure} {request.url}")

    def wanted(self, url: str) -> bool:
        return any(part in url for part in self.expected)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.failed == [], self.failed


@contextlib.asynccontextmanager
async def browser(
    url: str, script: bool = True, **options: Any
) -> AsyncIterator[tuple[Any, Watch]]:
    """A page on the console's origin, watched; `script`: False turns JavaScript off; `options`:
    more of the browser context's."""
    from playwright.async_api import async_playwright

    watch = Watch(url)
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium())
        try:
            context = await launched.new_context(
                base_url=url, java_script_enabled=script, **options
            )
            page = await context.new_page()
            page.set_default_timeout(20_000)
            page.on("console", watch.on_console)
            page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
            page.on("request", watch.on_request)
            page.on("response", watch.on_response)
            page.on("requestfailed", watch.on_failed)
            yield page, watch
        finally:
            await launched.close()


async def log_in(page: Any, key: str, path: str = "/ui") -> None:
    """Through the login form, as a person would; lands on `path`."""
    await page.goto(path)
    assert "/ui/login" in page.url
    await page.fill("input[name=key]", key)
    await page.click("#login button[type=submit]")
    await page.wait_for_url(f"**{path}")
