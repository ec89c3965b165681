"""Prompts and chat in the console, in chromium, on a running stack: an edit saves version 2 and
the history says who made it; a label moves and rolls back; a prompt is deactivated and
activated again; the playground shows what a call would cost before making it, then streams the
call and shows its true cost. A chat turn's reply streams in (its text grows), Stop cancels it
(the request ends cancelled), Retry sends it again and the conversation records the reply."""

import pytest
from console_stack import browser, console_stack, log_in

from llmbus.shared.settings import Settings
from support import browser_missing, wait_for

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
SLOW = "drip-40-60"  # 60 words, one every 40 ms: long enough to stop half-way


async def test_a_prompt_is_edited_labelled_and_tried_in_the_playground(settings: Settings) -> None:
    async with console_stack(settings) as stack, browser(stack.url) as (page, watch):
        await stack.client.prompts.create("greet", "Greeting", "Say hello to {{ name }}.")
        await log_in(page, stack.admin_key, "/ui/prompts")
        await page.click("#prompt-list a:text('greet')")
        await page.wait_for_url("**/ui/prompts/greet")
        assert "Version 1 of 1" in await page.inner_text("#prompt-version")

        await page.fill("#prompt-edit textarea[name=template]", "Say hello to {{ name }}, warmly.")
        await page.fill("#prompt-edit input[name=note]", "warmer")
        await page.click("#prompt-edit button[type=submit]")
        await page.wait_for_url("**/ui/prompts/greet?version=2")
        assert "Version 2 of 2" in await page.inner_text("#prompt-version")
        history = await page.inner_text("#prompt-history")
        assert "PromptVersionCreated" in history and "warmer" in history and "root" in history
        assert (
            await stack.client.prompts.get("greet")
        ).template == "Say hello to {{ name }}, warmly."

        await page.select_option("#prompt-label select[name=label]", "production")
        await page.fill("#prompt-label input[name=version]", "2")
        await page.click("#prompt-label button:text('Move label')")
        await page.wait_for_url("**version=2")
        await page.fill("#prompt-label input[name=version]", "1")
        await page.click("#prompt-label button:text('Roll back')")
        await page.wait_for_url("**version=1")
        assert (await stack.client.prompts.get("greet")).labels["production"] == 1
        await page.click("#prompt-active button:text('Deactivate')")
        await page.wait_for_selector("#prompt-active button:text('Activate')")
        assert not (await stack.client.prompts.get("greet")).active
        await page.click("#prompt-active button:text('Activate')")
        await page.wait_for_selector("#prompt-active button:text('Deactivate')")

        await page.goto("/ui/prompts/greet?version=2")
        await page.fill("#playground input[name='var.name']", "Ada")
        await page.select_option("#playground select[name=target]", "fake-gpt")
        await page.click("#preview-button")
        await page.wait_for_selector("#estimate")
        assert "At most $" in await page.inner_text("#estimate")
        assert await page.input_value("#playground input[name='var.name']") == "Ada"
        await page.click("#run-button")
        output = page.locator("#playground-output")
        await page.wait_for_selector("#playground-output[data-state=done]")
        assert await output.locator("[data-text]").inner_text()
        assert "cost $" in await output.locator("[data-usage]").inner_text()
        request_id = await output.get_attribute("data-request-id")
        assert request_id
        status = await stack.client.status(request_id)
        assert status.status == "received" and status.outcome is not None
        assert status.outcome["prompt_version"] == 2 and status.outcome["user_id"] == "root"
        watch.assert_clean()


async def test_a_chat_reply_streams_stops_and_is_retried(settings: Settings) -> None:
    async with console_stack(settings) as stack, browser(stack.url) as (page, watch):
        await log_in(page, stack.admin_key, "/ui/chat?user=ann")
        await page.fill("#new-conversation input[name=title]", "Stories")
        await page.select_option("#new-conversation select[name=model]", SLOW)
        await page.click("#new-conversation button[type=submit]")
        await page.wait_for_selector("#chat-form")
        assert "Stories" in await page.inner_text("#conversation-list")

        await page.fill("#chat-form textarea[name=content]", "Tell me a long story.")
        await page.click("#chat-form button[data-run]")
        text = page.locator("#chat-output [data-text]")

        async def longer_than(chars: int) -> bool:
            return len(await text.inner_text()) > chars

        await wait_for(lambda: longer_than(8), 20, "the reply to start")
        early = len(await text.inner_text())
        await wait_for(lambda: longer_than(early + 8), 20, "the reply to grow")
        await page.click("#chat-form button[data-stop]")
        await page.wait_for_selector("#chat-output[data-state=stopped]")
        stopped = await page.get_attribute("#chat-output", "data-request-id")
        assert stopped

        async def cancelled() -> bool:
            status = await stack.client.status(stopped)
            return (
                status.status == "failed"
                and (status.outcome or {}).get("error_type") == "cancelled"
            )

        await wait_for(cancelled, 30, "the stopped turn to end cancelled")
        shown = len(await text.inner_text())
        assert 0 < shown < len(" ".join(f"w{n}" for n in range(1, 61)))

        await page.click("#chat-output button[data-retry-last]")
        await page.wait_for_selector("#conversation .bubble.assistant", timeout=30_000)
        conversation = (await stack.client.conversations.list("ann")).items[0]
        view = await stack.client.conversations.get("ann", conversation.conversation_id)
        assert [turn.role for turn in view.messages] == ["user", "user", "assistant"]
        assert [failure.error_type for failure in view.failures] == ["cancelled"]
        assert view.messages[-1].content and view.messages[-1].content.startswith("w1 w2")
        # the stopped turn, as the page now draws it: its failure, with a Retry of its own
        failure = page.locator(f"#conversation [data-request-id='{stopped}'] .failure")
        assert await failure.get_attribute("data-error-type") == "cancelled"
        assert await failure.locator("button[data-retry]").count() == 1
        watch.assert_clean()


async def test_the_pages_work_without_script_but_for_streaming(settings: Settings) -> None:
    async with console_stack(settings) as stack, browser(stack.url, script=False) as (page, watch):
        made = await stack.complete("hello", model="fake-gpt")
        await stack.projected()
        await log_in(page, stack.admin_key)
        assert await page.locator("#charts svg[data-chart]").count() == 6
        assert await page.locator("#budgets").count() == 1

        await page.goto("/ui/requests")
        await page.click(f"#request-log a[href$='{made['request_id']}']")
        await page.wait_for_url(f"**/ui/requests/{made['request_id']}")
        assert await page.inner_text("#request-content") == made["choices"][0]["message"]["content"]

        await page.goto("/ui/chat?user=bob")
        await page.click("#new-conversation button[type=submit]")
        await page.wait_for_selector("#chat-form")
        await page.select_option("#chat-form select[name=model]", "fake-gpt")
        await page.fill("#chat-form textarea[name=content]", "Hello without script.")
        await page.click("#chat-form button[data-run]")  # a plain POST: it waits for the reply
        await page.wait_for_selector("#conversation .bubble.assistant")
        assert "Hello without script." in await page.inner_text("#conversation")
        watch.assert_clean()
