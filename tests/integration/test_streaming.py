"""Streaming on real NATS with litellm's real streaming path: the deltas in order, a final chunk
with the usage and the cost, then one terminal event; a streamed call costs what a whole one
does; a stream cut off mid-way is charged for what it generated."""

import pytest

from llmbus.client import CompletionError
from llmbus.shared import subjects
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.settings import Settings
from support import EventLog, pipeline, wait_for

PROMPT = "Tell me about streams"


def usage_of(events: EventLog, request_id: str) -> list[dict[str, object]]:
    return [u for u in events.on(subjects.USAGE_RECORDED) if u["request_id"] == request_id]


async def one_terminal(events: EventLog, request_id: str) -> dict[str, object]:
    def ended() -> list[dict[str, object]]:
        return [e for e in events.terminal() if e["request_id"] == request_id]

    await wait_for(lambda: bool(ended()) and bool(usage_of(events, request_id)), 30,
                   "the terminal event and its usage")  # fmt: skip
    assert len(ended()) == 1, ended()
    return ended()[0]


async def test_chunks_arrive_in_order_then_the_final_chunk_then_one_terminal_event(
    settings: Settings,
) -> None:
    async with pipeline(settings) as (_nc, events, client):
        stream = client.stream(PROMPT, model="fake-gpt")
        chunks = [chunk async for chunk in stream]
        assert stream.result is not None
        deltas, final = chunks[:-1], chunks[-1]
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert len(deltas) > 3 and not any(c.final for c in deltas)
        assert "".join(c.delta for c in deltas) == stream.result.content
        assert deltas[-1].finish_reason == "stop"
        assert final.final and final.usage == stream.result.usage
        assert final.cost_usd == stream.result.cost_usd > 0
        terminal = await one_terminal(events, stream.request_id)
        assert terminal["content"] == stream.result.content
        assert usage_of(events, stream.request_id)[0]["cost_usd"] == stream.result.cost_usd


async def test_a_streamed_call_costs_what_the_same_whole_call_costs(settings: Settings) -> None:
    async with pipeline(settings) as (_nc, _events, client):
        whole = await client.complete(PROMPT, model="fake-gpt")
        stream = client.stream(PROMPT, model="fake-gpt")
        [_ async for _ in stream]
        assert stream.result is not None
        assert stream.result.content == whole.content
        assert stream.result.usage == whole.usage
        assert repr(stream.result.cost_usd) == repr(whole.cost_usd)


async def test_a_stream_cut_off_mid_way_is_charged_for_what_it_generated(
    settings: Settings,
) -> None:
    async with pipeline(settings) as (_nc, events, client):
        stream = client.stream(PROMPT, model="cut-3", team_id="streamers")
        chunks: list[CompletionChunk] = []
        with pytest.raises(CompletionError) as raised:
            async for chunk in stream:
                chunks.append(chunk)
        failed = raised.value.failed
        assert failed.error_type.value == "provider_error" and not failed.retryable
        assert "".join(c.delta for c in chunks if not c.final) == "fake reply to:"
        assert chunks[-1].final and chunks[-1].error_type == "provider_error"
        assert failed.usage is not None and failed.usage.completion_tokens > 0
        assert failed.cost_usd is not None and failed.cost_usd > 0
        assert chunks[-1].cost_usd == failed.cost_usd
        terminal = await one_terminal(events, stream.request_id)
        assert terminal["error_type"] == "provider_error"
        [usage] = usage_of(events, stream.request_id)
        assert (usage["status"], usage["cost_usd"]) == ("error", failed.cost_usd)
        assert usage["completion_tokens"] == failed.usage.completion_tokens


async def test_a_re_sent_streamed_request_gets_its_stored_outcome_without_a_call(
    settings: Settings,
) -> None:
    async with pipeline(settings) as (_nc, _events, client):
        first = client.stream(PROMPT, model="fake-gpt")
        [_ async for _ in first]
        again = client.stream(first.request)
        chunks = [chunk async for chunk in again]
        assert chunks == [] and again.result == first.result


async def test_a_workflow_run_and_its_time_to_first_token_reach_the_usage_query(
    settings: Settings,
) -> None:
    async with pipeline(settings) as (_nc, events, client):
        stream = client.stream(PROMPT, model="drip-40-60", workflow_id="nightly-42")
        [_ async for _ in stream]
        whole = await client.complete(PROMPT, model="fake-gpt", workflow_id="nightly-42")
        await one_terminal(events, whole.request_id)
        [streamed] = usage_of(events, stream.request_id)
        [not_streamed] = usage_of(events, whole.request_id)
        assert streamed["workflow_id"] == not_streamed["workflow_id"] == "nightly-42"
        # 60 words 40 ms apart: the first comes 2.36 s before the last; a call not streamed
        # has no first token
        ttft, latency = float(streamed["ttft_ms"]), float(streamed["latency_ms"])  # type: ignore[arg-type]
        assert 0 < ttft < latency - 2000
        assert not_streamed["ttft_ms"] is None

        async def counted() -> bool:
            result = await client.usage.query(["workflow"], metrics=["requests", "ttft_ms_p50"])
            return result.rows == [
                {"workflow": "nightly-42", "requests": 2, "ttft_ms_p50": streamed["ttft_ms"]}
            ]

        await wait_for(counted, 30, "both calls of the run in the usage query")
