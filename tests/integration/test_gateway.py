"""The OpenAI-compatible gateway on real NATS with the completion and usage services: the
official openai client, unchanged but for its base_url and a key from `client.keys.create`,
completes and streams, booked to the key's user, team and project whatever the body says; every
refusal comes in OpenAI's shape with its status; a stream whose connection closes is cancelled
and charged for what it generated. The gateway runs with its own NATS credentials, so any
permission it lacks fails the test."""

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from llmbus.client import Client
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.settings import Settings
from support import EventLog, pipeline, running_gateway, wait_for, with_budgets

ROLE = "helper"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


@dataclass
class Door:
    url: str
    key: str
    key_id: str
    client: Client
    events: EventLog

    def openai(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0)

    async def post(self, body: bytes, **headers: str) -> tuple[int, dict[str, Any], Any]:
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.url}/v1/chat/completions", data=body,
            headers={"Content-Type": "application/json", **headers},
        ) as response:  # fmt: skip
            return response.status, dict(response.headers), await response.json()


def with_role(config_file: Path) -> Settings:
    """A role in the file in-process services read; the settings it now gives."""
    config = yaml.safe_load(config_file.read_text())
    config["roles"] = {ROLE: {"model": "fake-gpt"}}
    config_file.write_text(yaml.safe_dump(config))
    return Settings.model_validate(config)


@contextlib.asynccontextmanager
async def gateway(settings: Settings, **options: Any) -> AsyncIterator[Door]:
    async with (
        pipeline(settings) as (_, events, client),
        running_gateway(settings, **options) as url,
    ):
        created = await client.keys.create("ann", team_id="red", project_id="apollo")
        yield Door(url, created.key, created.info.key_id, client, events)


def usage_of(events: EventLog, request_id: str) -> list[dict[str, Any]]:
    return [u for u in events.on(subjects.USAGE_RECORDED) if u["request_id"] == request_id]


async def test_the_openai_client_completes_and_streams_booked_to_its_key(
    config_file: Path, settings: Settings
) -> None:
    async with gateway(with_role(config_file)) as door:
        oai = door.openai()
        raw = await oai.chat.completions.with_raw_response.create(
            model="fake-gpt", messages=MESSAGES, user="mallory",
            extra_body={"user_id": "mallory", "team_id": "blue"},
            extra_headers={"X-Llmbus-Workflow-Id": "run-1", "X-Llmbus-Tags": "a, b"},
        )  # fmt: skip
        done = raw.parse()
        request_id = raw.headers["x-llmbus-request-id"]
        assert done.id == f"chatcmpl-{request_id}" and done.choices[0].message.content
        assert done.usage is not None and done.usage.completion_tokens > 0
        assert float(raw.headers["x-llmbus-cost-usd"]) > 0
        await wait_for(lambda: usage_of(door.events, request_id), 30, "the usage recorded")
        [usage] = usage_of(door.events, request_id)
        assert (usage["user_id"], usage["team_id"], usage["project_id"]) == ("ann", "red", "apollo")
        assert usage["workflow_id"] == "run-1" and sorted(usage["tags"]) == ["a", "b"]

        stream = await oai.chat.completions.create(
            model=ROLE, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        streamed_id = chunks[0].id.removeprefix("chatcmpl-")
        await wait_for(lambda: usage_of(door.events, streamed_id), 30, "the stream's usage")
        [recorded] = usage_of(door.events, streamed_id)
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
            recorded["prompt_tokens"], recorded["completion_tokens"],
        )  # fmt: skip
        assert recorded["user_id"] == "ann"

        listed = {model.id: model.owned_by async for model in oai.models.list()}
        assert listed["fake-gpt"] == "openai" and listed[ROLE] == "llmbus-role"
        async with aiohttp.ClientSession() as session:
            for probe in ("healthz", "readyz"):
                async with session.get(f"{door.url}/{probe}") as response:
                    assert response.status == 200, probe
            async with session.get(f"{door.url}/metrics") as response:
                exposition = await response.text()
        assert 'llmbus_gateway_http_requests_total{route="/v1/chat/completions",status="200"}' in (
            exposition
        )


async def test_every_refusal_comes_in_openai_s_shape_with_its_status(settings: Settings) -> None:
    async with gateway(settings, max_body_bytes=4096) as door:
        oai = door.openai()
        status, _, body = await door.post(
            json.dumps({"model": "fake-gpt", "messages": MESSAGES}).encode()
        )
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        with pytest.raises(openai.AuthenticationError):
            await door.openai("sk-llmbus-nobody-0000").chat.completions.create(
                model="fake-gpt", messages=MESSAGES
            )
        with pytest.raises(openai.NotFoundError) as unknown:
            await oai.chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert unknown.value.code == "unknown_model"
        with pytest.raises(openai.RateLimitError) as limited:
            await oai.chat.completions.create(model="fail-429", messages=MESSAGES)
        assert int(limited.value.response.headers["retry-after"]) >= 1
        with pytest.raises(openai.BadRequestError) as several:
            await oai.chat.completions.create(model="fake-gpt", messages=MESSAGES, n=2)
        assert several.value.body["param"] == "n"  # type: ignore[index]

        bearer = {"Authorization": f"Bearer {door.key}"}
        status, _, body = await door.post(b'{"model": "fake-gpt", "messages": [', **bearer)
        assert (status, body["error"]["type"]) == (400, "invalid_request_error")
        padding = "x" * 5000
        huge = json.dumps({"model": "fake-gpt", "messages": [{"role": "user", "content": padding}]})
        status, _, body = await door.post(huge.encode(), **bearer)
        assert (status, body["error"]["code"]) == (413, "too_large")

        await door.client.keys.revoke(door.key_id)

        async def refused() -> bool:
            status, _, _ = await door.post(b"{}", **bearer)
            return status == 401

        await wait_for(refused, 10, "the revoked key to be refused")
        assert door.key not in json.dumps(door.events.events), "a key in an event"


async def test_a_hard_budget_spent_refuses_with_402(config_file: Path, settings: Settings) -> None:
    budget = {"name": "ann-tiny", "scope": {"user": "ann"}, "window": "daily",
              "limit_usd": "0.000001", "mode": "hard"}  # fmt: skip
    async with gateway(with_budgets(config_file, budget)) as door:
        await wait_for(lambda: answers(door.client.nc, subjects.BUDGET_STATUS), 60, "budgets")
        with pytest.raises(openai.APIStatusError) as refused:
            await door.openai().chat.completions.create(model="fake-gpt", messages=MESSAGES)
        assert refused.value.status_code == 402 and refused.value.code == "budget_exceeded"


async def test_closing_a_stream_mid_way_cancels_it_and_charges_what_was_generated(
    settings: Settings,
) -> None:
    async with gateway(settings) as door:
        stream = await door.openai().chat.completions.create(
            model="drip-40-60", messages=MESSAGES, stream=True
        )
        seen = 0
        async for chunk in stream:
            request_id = chunk.id.removeprefix("chatcmpl-")
            seen += 1
            if seen == 5:
                break
        await stream.close()

        def failed() -> list[dict[str, Any]]:
            return [e for e in door.events.on(subjects.COMPLETION_FAILED)
                    if e["request_id"] == request_id]  # fmt: skip

        await wait_for(failed, 30, "the stream to be cancelled")
        [cancelled] = failed()
        assert cancelled["error_type"] == "cancelled"
        assert 3 <= cancelled["usage"]["completion_tokens"] < 60
        await wait_for(lambda: usage_of(door.events, request_id), 30, "the partial usage")
        [usage] = usage_of(door.events, request_id)
        assert usage["cost_usd"] == cancelled["cost_usd"] > 0

        # a whole reply waited for by a caller that gives up first is cancelled too
        body = {"model": "slow-1500", "messages": MESSAGES}
        headers = {"Authorization": f"Bearer {door.key}", "X-Llmbus-Workflow-Id": "impatient"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
            with pytest.raises(TimeoutError):
                await session.post(f"{door.url}/v1/chat/completions", json=body, headers=headers)

        def given_up() -> list[dict[str, Any]]:
            return [e for e in door.events.on(subjects.COMPLETION_FAILED)
                    if e.get("workflow_id") == "impatient"]  # fmt: skip

        await wait_for(given_up, 30, "the abandoned request to be cancelled")
        assert given_up()[0]["error_type"] == "cancelled"
