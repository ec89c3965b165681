"""The completion pipeline end to end on real parts: NATS → worker → litellm → stores → DuckDB."""

import asyncio
import json

import pytest

from llmbus.client import CompletionError
from llmbus.services.completion.application import CompletionApplication
from llmbus.shared import subjects
from llmbus.shared.eventstore import open_store
from llmbus.shared.sections import PostgresSettings
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import (
    pipeline,
    projected_requests,
    wait_for,
)


def request(request_id: str, model: str = "fake-gpt", **fields: object) -> bytes:
    body = {
        "request_id": request_id,
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return json.dumps(body | fields).encode()


async def test_a_request_completes_and_its_cost_is_queryable(settings: Settings) -> None:
    async with pipeline(settings) as (_, events, client):
        received = await client.complete(
            "What is an event store?", model="fake-gpt", user_id="ann", team_id="team-a"
        )
        assert received.content and received.provider == "openai"
        assert received.usage.prompt_tokens > 0 and received.usage.completion_tokens > 0
        expected = received.usage.prompt_tokens * 1e-6 + received.usage.completion_tokens * 2e-6
        assert received.cost_usd == pytest.approx(expected)

        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 1, what="UsageRecorded")
        [usage] = events.on(subjects.USAGE_RECORDED)
        assert usage["request_id"] == received.request_id
        assert usage["status"] == "ok" and usage["user_id"] == "ann"
        assert usage["cost_usd"] == received.cost_usd
        [terminal] = events.terminal()
        assert terminal["request_id"] == received.request_id

        async def projected() -> bool:
            return await projected_requests(client) == 1

        await wait_for(projected, what="the usage service to project the call")
        by_team = await client.usage.query(["team"])
        assert by_team.rows == [by_team.rows[0]]
        assert by_team.rows[0]["team"] == "team-a"
        assert by_team.rows[0]["cost_usd"] == pytest.approx(received.cost_usd)


async def test_rate_limits_and_server_errors_are_retried_then_fail_clearly_and_uncharged(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    async with pipeline(settings, with_usage=False) as (_, events, client):
        for model, error_type in (("fail-429", "rate_limited"), ("fail-500", "provider_error")):
            with pytest.raises(CompletionError) as failure:
                await client.complete("hello", model=model)
            assert failure.value.failed.error_type == error_type
            assert failure.value.failed.retryable
            assert failure.value.failed.message
        attempts = 1 + settings.completion.num_retries
        assert fake_provider.stats()["calls"] == {"fail-429": attempts, "fail-500": attempts}

        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 2, what="usage")
        for usage in events.on(subjects.USAGE_RECORDED):
            assert usage["status"] == "error" and usage["cost_usd"] == 0
        assert [e["error_type"] for e in events.on(subjects.COMPLETION_FAILED)] == [
            "rate_limited",
            "provider_error",
        ]


async def test_a_request_published_twice_is_completed_and_charged_once(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    async with pipeline(settings, with_usage=False) as (nc, events, _):
        js = nc.jetstream()
        for _ in range(2):  # no Nats-Msg-Id: JetStream stores both copies
            await js.publish(subjects.COMPLETION_REQUESTED, request("twice-1"))
        await js.publish(subjects.COMPLETION_REQUESTED, request("later-1", model="slow-200"))

        async def all_acked() -> bool:
            info = await js.consumer_info(subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER)
            return info.ack_floor.stream_seq == 3 and info.num_pending == 0

        await wait_for(all_acked, what="both copies and the later request acked")
        await events.wait_terminal(2)
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 2, what="usage")

    # the later request's events were relayed after any the duplicate could have caused
    assert sorted(e["request_id"] for e in events.terminal()) == ["later-1", "twice-1"]
    assert sorted(e["request_id"] for e in events.on(subjects.USAGE_RECORDED)) == [
        "later-1",
        "twice-1",
    ]
    assert fake_provider.stats()["calls"]["fake-gpt"] == 1
    store = open_store(CompletionApplication, settings, "completion")
    # for each request: its claim, then Requested + Received
    assert store.recorder.max_notification_id() == 6
    store.close()


async def test_a_request_id_re_sent_with_a_different_request_is_refused_and_the_first_stands(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    first = request("same-id-1", model="slow-200")
    changed = request("same-id-1", model="slow-200", messages=[{"role": "user", "content": "bye"}])
    async with pipeline(settings, with_usage=False) as (nc, events, _):
        js = nc.jetstream()
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)

        async def send(data: bytes) -> None:
            # no Nats-Msg-Id: JetStream keeps every copy, as after its duplicate window
            await js.publish(subjects.COMPLETION_REQUESTED, data,
                             headers={subjects.REPLY_TO_HEADER: inbox})  # fmt: skip

        # the changed copy arrives while the first is at the model, and again once it has ended
        for data in (first, changed):
            await send(data)
        answers = [json.loads((await replies.next_msg(timeout=30)).data) for _ in range(2)]
        await events.wait_terminal(1)
        for data in (changed, first):
            await send(data)
            answers.append(json.loads((await replies.next_msg(timeout=30)).data))

        async def all_acked() -> bool:
            info = await js.consumer_info(subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER)
            return info.ack_floor.stream_seq == 4 and info.num_pending == 0

        await wait_for(all_acked, what="all four copies acked")

    received = next(a for a in answers if "content" in a)
    conflicts = [a for a in answers if a.get("error_type") == "request_conflict"]
    assert len(conflicts) == 2 and all(not c["retryable"] for c in conflicts)
    assert "same-id-1" in conflicts[0]["message"] and "new request_id" in conflicts[0]["message"]
    # the unchanged re-send gets the first outcome; the refusals changed nothing
    assert answers.count(received) == 2
    [terminal] = events.terminal()
    assert terminal["request_id"] == "same-id-1" and terminal["content"] == received["content"]
    assert events.on(subjects.COMPLETION_FAILED) == []
    assert fake_provider.stats()["calls"] == {"slow-200": 1}
    store = open_store(CompletionApplication, settings, "completion")
    completion = store.find("same-id-1")
    assert completion is not None and completion.outcome == received
    assert store.recorder.max_notification_id() == 3  # its claim, then Requested + Received
    store.close()


async def test_bad_messages_fail_clearly_go_to_dead_letters_and_the_worker_keeps_going(
    settings: Settings,
) -> None:
    bad = [
        (b'{"request_id": "broken-1", "model": "fake-gpt", "messages": [', "malformed_json"),
        (b"not json at all", None),
        (json.dumps({"request_id": "invalid-1", "model": "fake-gpt"}).encode(), "invalid_request"),
        (request("unknown-1", model="no-such-provider-model-xyz"), "unknown_model"),
        (b"x" * 1_040_000, None),
    ]
    async with pipeline(settings, with_usage=False) as (nc, events, client):
        js = nc.jetstream()
        for payload, _ in bad:
            await js.publish(subjects.COMPLETION_REQUESTED, payload)
        good = await client.complete("still there?", model="fake-gpt", request_id="good-1")
        assert good.request_id == "good-1"

        await wait_for(
            lambda: len(events.on(subjects.COMPLETION_FAILED)) == 3, what="3 CompletionFailed"
        )
        failed = {e["request_id"]: e for e in events.on(subjects.COMPLETION_FAILED)}
        assert failed["broken-1"]["error_type"] == "malformed_json"
        assert "not valid JSON" in failed["broken-1"]["message"]
        assert failed["invalid-1"]["error_type"] == "invalid_request"
        assert "messages" in failed["invalid-1"]["message"]
        assert failed["unknown-1"]["error_type"] == "unknown_model"
        assert "no-such-provider-model-xyz" in failed["unknown-1"]["message"]
        assert not any(e["retryable"] for e in failed.values())

        dead = await js.subscribe(
            "llmbus.deadletter.completion",
            stream=subjects.DEAD_LETTER_STREAM,
            ordered_consumer=True,
        )
        letters = [await dead.next_msg(timeout=10) for _ in bad]
        # handled concurrently, so dead letters arrive in any order
        reasons = {m.data: m.headers[subjects.ERROR_TYPE_HEADER] for m in letters}  # type: ignore[index]
        assert reasons == {
            bad[0][0]: "malformed_json",
            bad[1][0]: "malformed_json",
            bad[2][0]: "invalid_request",
            bad[3][0]: "unknown_model",
            bad[4][0]: "too_large",
        }
        oversized = next(m for m in letters if m.data == bad[4][0])
        assert "1040000 bytes" in oversized.headers[subjects.ERROR_HEADER]  # type: ignore[index]


async def test_the_pipeline_runs_on_postgresql_event_stores(
    settings: Settings, postgres_schema: PostgresSettings
) -> None:
    on_postgres = settings.model_copy(
        update={"event_store": "postgres", "postgres": postgres_schema}
    )
    async with pipeline(on_postgres) as (_, events, client):
        replies = await asyncio.gather(
            *(client.complete(f"q{i}", model="llmbus-sim/small", user_id="pg") for i in range(20))
        )
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 20, what="usage")

        async def projected() -> bool:
            return await projected_requests(client) == 20

        await wait_for(projected, what="the usage service to project all 20")
        total = (await client.usage.query()).rows[0]["cost_usd"]
        assert total == pytest.approx(sum(r.cost_usd for r in replies), abs=1e-12)
    store = open_store(CompletionApplication, on_postgres, "completion")
    # a claim, then Requested + Received, for each request, in PostgreSQL
    assert store.recorder.max_notification_id() == 60
    store.close()


async def test_a_retryable_failure_is_final_for_its_id_and_the_sdk_retries_under_a_new_one(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    # flaky-429-3 answers 429 three times per prompt: the worker's three attempts all see one
    async with pipeline(settings, with_usage=False) as (_, events, client):
        with pytest.raises(CompletionError) as failed:
            await client.complete("busy?", model="flaky-429-3", request_id="flaky-1")
        assert failed.value.failed.error_type == "rate_limited" and failed.value.failed.retryable
        calls = fake_provider.calls("flaky-429-3")

        # the id is an idempotency key: sent again, it gets its outcome back, with no new call
        with pytest.raises(CompletionError) as again:
            await client.complete("busy?", model="flaky-429-3", request_id="flaky-1")
        assert again.value.failed == failed.value.failed
        assert fake_provider.calls("flaky-429-3") == calls

        received = await client.complete(
            "busy?", model="flaky-429-3", request_id="flaky-1", retries=1, retry_backoff_s=0.01
        )
        assert received.request_id == "flaky-1:retry-1" and received.content
        await events.wait_terminal(2)
    assert [e["request_id"] for e in events.terminal()] == ["flaky-1", "flaky-1:retry-1"]
