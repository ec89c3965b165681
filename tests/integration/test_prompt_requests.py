"""Requests that name a prompt instead of messages: the worker renders it, accounts the version,
and fails clearly (no model call) when it cannot. Managed prompts are answered on
llmbus.prompt.resolve by a stub standing in for the conversation service, over a real NATS."""

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.client import CompletionError
from llmbus.services.completion.application import CompletionApplication
from llmbus.services.usage.projection import UsageProjection
from llmbus.shared import subjects
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.contracts import (
    CompletionReceived,
    CompletionRequested,
    ErrorReply,
    PromptRef,
    UsageQuery,
    UsageRecorded,
)
from llmbus.shared.contracts.budget import BudgetAdmission, BudgetReservation
from llmbus.shared.contracts.prompt import PromptChanged, ResolvedPrompt
from llmbus.shared.eventstore import open_store
from llmbus.shared.prompts import domain_prompt, render
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import pipeline, projected_requests, wait_for

ARTICLE = "Event stores keep every change as an event, so any past state can be rebuilt."


def by_prompt(request_id: str, key: str, variables: dict[str, Any], **fields: Any) -> Any:
    ref = PromptRef(key=key, variables=variables, **fields.pop("ref", {}))
    return CompletionRequested(request_id=request_id, model="fake-gpt", prompt=ref, **fields)


def summarizer_messages(**values: Any) -> list[dict[str, str]]:
    prompt = domain_prompt("summarizer")
    assert prompt is not None
    return render(prompt.template, prompt.variables, values)


def words(messages: list[dict[str, str]]) -> int:
    """The fake provider counts prompt tokens as words."""
    return sum(len(m["content"].split()) for m in messages)


class PromptDesk:
    """Answers llmbus.prompt.resolve as the conversation service would, from a dict."""

    def __init__(self) -> None:
        self.prompts: dict[str, ResolvedPrompt] = {}
        self.asked: list[dict[str, Any]] = []

    def put(self, key: str, version: int, template: str, active: bool = True) -> None:
        self.prompts[key] = ResolvedPrompt(
            key=key, version=version, name=key, template=template, variables=[],
            active=active, source="managed",
        )  # fmt: skip

    async def answer(self, msg: Msg) -> None:
        query = json.loads(msg.data)
        self.asked.append(query)
        prompt = self.prompts.get(query["key"])
        if prompt is None:
            reply = ErrorReply(error_type="not_found", message=f"prompt {query['key']!r} not found")
            await msg.respond(reply.model_dump_json().encode())
        else:
            await msg.respond(prompt.model_dump_json().encode())


@contextlib.asynccontextmanager
async def prompt_desk(nc: NatsClient) -> AsyncIterator[PromptDesk]:
    desk = PromptDesk()
    sub = await nc.subscribe(subjects.PROMPT_RESOLVE, cb=desk.answer)
    await nc.flush()
    try:
        yield desk
    finally:
        await sub.unsubscribe()


async def llmbus_usage(*args: str) -> list[dict[str, Any]]:
    """The `llmbus usage` command, run as a user would (the services run in this loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmbus", "usage", *args, "--format", "json",
        env=os.environ.copy(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


async def test_a_domain_prompt_is_rendered_completed_and_costed_by_prompt_version(
    settings: Settings,
) -> None:
    async with pipeline(settings) as (_, events, client):
        received = await client.complete(
            by_prompt("sum-1", "summarizer", {"text": ARTICLE, "max_words": 20}, user_id="ann")
        )
        plain = await client.complete("no prompt here", model="fake-gpt")

        # the provider got the rendered system and user turns, defaults filled in
        rendered = summarizer_messages(text=ARTICLE, max_words=20)
        assert [m["role"] for m in rendered] == ["system", "user"]
        assert received.content == "fake reply to: " + " ".join(rendered[1]["content"][:40].split())
        assert received.usage.prompt_tokens == words(rendered)
        assert (received.prompt_key, received.prompt_version) == ("summarizer", 1)
        assert (plain.prompt_key, plain.prompt_version) == (None, None)

        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 2, what="usage")
        usage = {e["request_id"]: e for e in events.on(subjects.USAGE_RECORDED)}
        assert (usage["sum-1"]["prompt_key"], usage["sum-1"]["prompt_version"]) == (
            "summarizer",
            1,
        )
        assert usage[plain.request_id]["prompt_key"] is None

        async def projected() -> bool:
            return await projected_requests(client) == 2

        await wait_for(projected, what="the usage service to project both calls")
        by_version = (await client.usage.query(["prompt_version"])).rows
        assert {r["prompt_version"]: r["requests"] for r in by_version} == {
            "summarizer@1": 1,
            None: 1,
        }
        summarizer = await client.usage.query(filters={"prompt": "summarizer"})
        assert summarizer.rows[0]["cost_usd"] == pytest.approx(received.cost_usd)

        rows = await llmbus_usage("--by", "prompt", "--by", "prompt_version")
        assert [(r["prompt"], r["prompt_version"], r["requests"]) for r in rows if r["prompt"]] == [
            ("summarizer", "summarizer@1", 1)
        ]


async def test_a_managed_prompt_is_resolved_once_and_again_after_it_changes(
    settings: Settings,
) -> None:
    async with (
        pipeline(settings, with_usage=False) as (nc, events, client),
        prompt_desk(nc) as desk,
    ):
        desk.put("greeter", 1, "v1 greet {{ name }}")
        first = await client.complete(by_prompt("greet-1", "greeter", {"name": "Ann"}))
        assert first.content == "fake reply to: v1 greet Ann"
        assert desk.asked == [{"key": "greeter", "label": None, "version": None}]

        desk.put("greeter", 2, "v2 hello {{ name }}")  # a new version nobody announced
        second = await client.complete(by_prompt("greet-2", "greeter", {"name": "Bob"}))
        assert (second.content, second.prompt_version) == ("fake reply to: v1 greet Bob", 1)
        assert len(desk.asked) == 1  # served from the worker's cache

        changed = PromptChanged(key="greeter", event="PromptVersionCreated", version=2)
        await nc.publish("llmbus.prompt.events.greeter", changed.model_dump_json().encode())
        replies: list[CompletionReceived] = []

        async def renders_version_2() -> bool:
            request = by_prompt(f"greet-{len(replies) + 3}", "greeter", {"name": "Cy"})
            replies.append(await client.complete(request))
            return replies[-1].prompt_version == 2

        await wait_for(renders_version_2, what="the worker to drop its cached greeter")
        assert replies[-1].content == "fake reply to: v2 hello Cy"
        assert len(desk.asked) == 2  # asked once more, after the change

        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 2 + len(replies))
        versions = {
            e["request_id"]: e["prompt_version"] for e in events.on(subjects.USAGE_RECORDED)
        }
        assert versions["greet-1"] == versions["greet-2"] == 1
        assert versions[replies[-1].request_id] == 2


async def test_a_prompt_that_cannot_be_rendered_fails_clearly_without_a_model_call(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    cases = {
        "p-unknown": (by_prompt("p-unknown", "no-such-prompt", {}), "prompt_not_found",
                      "'no-such-prompt' not found"),
        "p-version": (by_prompt("p-version", "summarizer", {"text": "t"}, ref={"version": 2}),
                      "invalid_request", "no version 2"),
        "p-label": (by_prompt("p-label", "summarizer", {"text": "t"}, ref={"label": "prod"}),
                    "invalid_request", "no label 'prod'"),
        "p-missing": (by_prompt("p-missing", "summarizer", {}), "invalid_variables",
                      "missing required variable 'text'"),
        "p-typed": (by_prompt("p-typed", "summarizer", {"text": "t", "max_words": "ten"}),
                    "invalid_variables", "'max_words' must be integer"),
        "p-extra": (by_prompt("p-extra", "summarizer", {"text": "t", "colour": "red"}),
                    "invalid_variables", "unknown variable 'colour'"),
        "p-inactive": (by_prompt("p-inactive", "retired", {"x": "1"}), "prompt_inactive",
                       "'retired' is deactivated"),
    }  # fmt: skip
    async with (
        pipeline(settings, with_usage=False) as (nc, _, client),
        prompt_desk(nc) as desk,
    ):
        desk.put("retired", 3, "old {{ x }}", active=False)
        for request, error_type, says in cases.values():
            with pytest.raises(CompletionError) as failure:
                await client.complete(request)
            failed = failure.value.failed
            assert (failed.error_type, failed.retryable) == (error_type, False)
            assert says in failed.message
            assert failed.prompt_key == request.prompt.key
        assert failure.value.failed.prompt_version == 3  # the deactivated one

        dead = await nc.jetstream().subscribe(
            "llmbus.deadletter.completion",
            stream=subjects.DEAD_LETTER_STREAM,
            ordered_consumer=True,
        )
        letters = [await dead.next_msg(timeout=10) for _ in cases]
        reasons = {
            json.loads(m.data)["request_id"]: m.headers[subjects.ERROR_TYPE_HEADER]  # type: ignore[index]
            for m in letters
        }
        assert reasons == {rid: error_type for rid, (_, error_type, _) in cases.items()}

    assert fake_provider.stats()["total"] == 0
    store = open_store(CompletionApplication, settings, "completion")
    for request_id in cases:
        completion = store.find(request_id)
        assert completion is not None and completion.status == "failed"
        assert completion.usage is None  # no provider call: nothing to account
        assert completion.request["prompt"]["key"] == completion.outcome["prompt_key"]  # type: ignore[index]
    store.close()


async def test_a_managed_prompt_without_the_conversation_service_fails_retryably(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    async with pipeline(settings, with_usage=False) as (_, _, client):
        with pytest.raises(CompletionError) as failure:
            await client.complete(by_prompt("p-away", "greeter", {"name": "Ann"}))
    failed = failure.value.failed
    assert (failed.error_type, failed.retryable) == ("prompt_unavailable", True)
    assert "is the conversation service running?" in failed.message
    assert fake_provider.stats()["total"] == 0


async def test_admission_reserves_the_worst_case_of_the_rendered_messages(
    settings: Settings,
) -> None:
    admitting = settings.model_copy(
        update={"completion": settings.completion.model_copy(update={"admission": "on"})}
    )
    reservations: list[BudgetReservation] = []

    async def admit(msg: Msg) -> None:  # stands in for the usage service's budgets
        reservations.append(BudgetReservation.model_validate_json(msg.data))
        await msg.respond(BudgetAdmission(admitted=True).model_dump_json().encode())

    async with pipeline(admitting, with_usage=False) as (nc, _, client):
        await nc.subscribe(subjects.BUDGET_RESERVE, cb=admit)
        await nc.flush()
        request = by_prompt("p-budget", "summarizer", {"text": ARTICLE}, params={"max_tokens": 50})
        await client.complete(request)

    [reservation] = reservations
    rendered = summarizer_messages(text=ARTICLE)
    assert reservation.amount_usd == ModelCatalog(admitting).worst_case_cost(
        "fake-gpt", rendered, 50
    )


def call(i: int, prompt: str | None, version: int | None, cost: float) -> tuple[int, UsageRecorded]:
    return i, UsageRecorded(
        usage_id=f"u-{i}", request_id=f"r-{i}", provider="openai", model="fake-gpt",
        prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_usd=cost, latency_ms=10,
        status="ok", prompt_key=prompt, prompt_version=version,
        occurred_at=datetime(2025, 3, 1, 12, tzinfo=UTC),
    )  # fmt: skip


def test_usage_breaks_down_by_prompt_and_by_prompt_version(tmp_path: Path) -> None:
    with UsageProjection(tmp_path / "usage.duckdb") as projection:
        projection.apply([
            call(1, "summarizer", 1, 0.1), call(2, "summarizer", 2, 0.2),
            call(3, "summarizer", 2, 0.3), call(4, None, None, 0.4),
        ])  # fmt: skip
        by_version = projection.query(UsageQuery(group_by=["prompt_version"])).rows
        assert [(r["prompt_version"], r["requests"]) for r in by_version] == [
            ("summarizer@2", 2),
            (None, 1),
            ("summarizer@1", 1),
        ]
        by_prompt = projection.query(UsageQuery(group_by=["prompt"])).rows
        assert [(r["prompt"], r["requests"]) for r in by_prompt] == [("summarizer", 3), (None, 1)]
        version_2 = projection.query(UsageQuery(filters={"prompt_version": "summarizer@2"}))
        assert version_2.rows[0]["cost_usd"] == pytest.approx(0.5)


# The usage table as the first release created it: the prompt columns were there from the start.
PREVIOUS_RELEASE_SCHEMA = """
CREATE TABLE usage (
    position BIGINT NOT NULL, usage_id VARCHAR NOT NULL, request_id VARCHAR NOT NULL,
    provider VARCHAR NOT NULL, model VARCHAR NOT NULL, user_id VARCHAR, team_id VARCHAR,
    project_id VARCHAR, conversation_id VARCHAR, role VARCHAR, prompt_key VARCHAR,
    prompt_version INTEGER, status VARCHAR NOT NULL, error_type VARCHAR,
    prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL, total_tokens BIGINT NOT NULL, cost_usd DECIMAL(18, 10) NOT NULL,
    latency_ms DOUBLE NOT NULL, occurred_at TIMESTAMP NOT NULL, tags VARCHAR[] NOT NULL
);
CREATE TABLE projection_state (name VARCHAR PRIMARY KEY, position BIGINT NOT NULL);
INSERT INTO usage VALUES (1, 'u-1', 'r-1', 'openai', 'fake-gpt', NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, 'ok', NULL, 10, 5, 0, 15, 0.25, 10, TIMESTAMP '2025-03-01 12:00:00', []);
INSERT INTO projection_state VALUES ('usage', 1);
"""


def test_a_projection_of_an_earlier_schema_is_rebuilt_from_the_events(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(PREVIOUS_RELEASE_SCHEMA)
    with UsageProjection(path) as projection:
        # dropped, to be caught up from the event store from its first event
        assert (projection.position, projection.count()) == (0, 0)
        projection.apply([call(1, None, None, 0.25), call(2, "summarizer", 1, 0.5)])
        rows = projection.query(UsageQuery(group_by=["prompt_version"])).rows
    assert [(r["prompt_version"], r["cost_usd"]) for r in rows] == [
        ("summarizer@1", 0.5),
        (None, 0.25),
    ]
